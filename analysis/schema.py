"""The per-sample records columns analysis reads, kept in this one module.

``analysis`` imports no training code (DESIGN.md "Layers"), so it cannot
import :mod:`erasablemask.experiments.evaluation.records`; it reads the
parquet files with pyarrow itself. The column names, their arrow types and
the schema version it understands are written out here, and
``tests/analysis/test_schema_mirror.py`` checks them against the records
schema, so the two cannot drift: change the version there and that test
names this file.

One row per (scored image, FR model, transform); ``kind`` says which image
was scored (``protected``, ``clean`` source face, ``attr_only`` edit, ``destroyed``
control: a heavy blur of the protected face). Rows of role ``commercial`` are a
commercial service's verdicts (``api_*`` columns; Table III).
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "RECORDS_SCHEMA_VERSION", "VERSION_KEY", "RECORDS_COLUMNS", "RECORDS_ARROW_SCHEMA", "KINDS", "ROLES", "FLAGS",
    "RecordsFileError", "check_records_schema",
]

RECORDS_SCHEMA_VERSION = 3  # the records schema version this analysis reads
VERSION_KEY = b"erasablemask.records_schema_version"  # where write_records stores it (parquet metadata)

KINDS = ("protected", "clean", "attr_only", "destroyed")
ROLES = ("surrogate", "black_box", "commercial")

# name -> arrow type, in the records' column order.
RECORDS_COLUMNS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "method": pa.string(),
    "kind": pa.string(),
    "stage": pa.int64(),
    "seed": pa.int64(),
    "split": pa.string(),
    "model": pa.string(),
    "role": pa.string(),
    "transform": pa.string(),
    "sample": pa.int64(),
    "source_identity": pa.int64(),
    "target": pa.string(),
    "cos_target": pa.float32(),
    "cos_source": pa.float32(),
    "cos_restored_target": pa.float32(),
    "cos_restored_source": pa.float32(),
    "cos_target_pair": pa.float32(),
    "thr_far_0p1": pa.float32(),
    "thr_far_0p01": pa.float32(),
    "thr_far_0p001": pa.float32(),
    "tau1": pa.float32(),
    "tau2": pa.float32(),
    "attack_success": pa.bool_(),
    "erasion_success": pa.bool_(),
    "identity_restored": pa.bool_(),
    # per-image quality (Table VI), q_<metric>_<pair>: only on 'protected' rows with transform 'none'
    **{f"q_{m}_{p}": pa.float32() for p in ("protected_vs_attr_only", "protected_vs_source", "restored_vs_source")
       for m in ("l1", "mse", "psnr", "ssim", "lpips")},
    # commercial services (role 'commercial', Table III): confidence in [0, 100], the service's thresholds
    "api_confidence": pa.float32(),
    "api_confidence_restored": pa.float32(),
    "api_thr_far_0p001": pa.float32(),
    "api_thr_far_0p0001": pa.float32(),
    "api_thr_far_0p00001": pa.float32(),
}
RECORDS_ARROW_SCHEMA = pa.schema([pa.field(n, t) for n, t in RECORDS_COLUMNS.items()])

# The flag columns and the comparison each one records (Eq. 17, Eq. 18, identity restoration):
# flag -> (cosine column, threshold column, True when the flag means cos > threshold).
FLAGS: dict[str, tuple[str, str, bool]] = {
    "attack_success": ("cos_target", "tau1", True),
    "erasion_success": ("cos_restored_target", "tau2", False),
    "identity_restored": ("cos_restored_source", "thr_far_0p01", True),
}


class RecordsFileError(ValueError):
    """A parquet file is not a records file this analysis reads (other version, other columns)."""


def check_records_schema(schema: pa.Schema, what: str) -> None:
    """Refuse a records file of another schema version or with other columns.

    Args:
        schema: the file's arrow schema (``pyarrow.parquet.read_schema``), metadata included.
        what: the file, for the message.

    Raises:
        RecordsFileError: no version, another version, or columns that differ (named, with the fix).
    """
    found = (schema.metadata or {}).get(VERSION_KEY)
    if found is None:
        raise RecordsFileError(f"'{what}' is not an erasablemask records file (no schema version in its metadata); "
                               f"collect the records.parquet an evaluation wrote")
    if found.decode() != str(RECORDS_SCHEMA_VERSION):
        raise RecordsFileError(f"records file '{what}' has schema version {found.decode()}; this analysis reads "
                               f"version {RECORDS_SCHEMA_VERSION}: evaluate the run again, or use the erasablemask "
                               f"that wrote it")
    missing = [n for n in RECORDS_COLUMNS if n not in schema.names]
    if missing:
        raise RecordsFileError(f"records file '{what}' lacks columns {missing} although it says version "
                               f"{RECORDS_SCHEMA_VERSION}; it was not written by write_records")
