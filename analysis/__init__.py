"""Reads records only: evaluated runs' per-sample parquet and MLflow facts -> one dataset -> tables, figures, report.

- :mod:`.schema`: the records columns analysis reads (checked against experiments' schema by a test);
- :mod:`.dataset`, :mod:`.collect`: the analysis dataset and ``erasablemask collect``;
- :mod:`.rates`: ASR / ESR / IDR and ceilings with bootstrap intervals over source identities;
- :mod:`.settings`, :mod:`.paper_values`: run variants, and the paper's published values with provenance;
- :mod:`.tables`, :mod:`.figures`, :mod:`.render`, :mod:`.report`: Tables II, V, VI, VII, figures, HTML/CSV/Markdown.

Imports no other layer of the package and none of the compute stack (tests/test_import_direction.py).
"""
