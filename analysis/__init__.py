"""Reads records only: MLflow runs and parquet -> tables and figures."""
