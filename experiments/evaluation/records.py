"""Per-sample evaluation records: the one schema, versioned, and its parquet reader and writer.

Long format (DESIGN.md "Seams", STYLE.md "Records are tidy"): one row per
(scored image, FR model, transform). Every rate, interval, table and figure
is a ``groupby`` over these rows
(:mod:`~erasablemask.experiments.evaluation.metrics` computes ASR, ESR and
IDR from them); nothing downstream parses metric names.

Which images are rows (column ``kind``):

- ``"protected"``: ``t(protect(x))`` for each evaluation transform ``t``,
  with the restored face ``erase(t(protect(x)))`` in the ``cos_restored_*``
  columns (null when the scheme cannot erase);
- ``"clean"``: the source face ``x`` itself (Table II's "Clean" row),
  transform ``"none"``, restored columns null;
- ``"attr_only"``: the scheme's attribute edit without protection (Table
  II's "Attributes Modified"), transform ``"none"``, restored columns null;
  absent for schemes that do not edit attributes;
- ``"destroyed"``: a heavy Gaussian blur of the protected face
  (:func:`~erasablemask.experiments.evaluation.metrics.destroy`), transform
  ``"none"``, restored columns null: the control that Eq. 18 read literally
  passes too (``esr_destroyed``) and identity restoration must not
  (``idr_destroyed``).

``method`` is the :class:`~erasablemask.experiments.evaluation.protection.Protection`
evaluated, on every row of its evaluation, baselines included: the
attribute-only edit belongs to a scheme (AttGAN's for ErasableMask,
another for SemanticAdv), and a records file stays self-contained. Table
II's baseline rows are ``kind == "clean"`` / ``"attr_only"``.

Target-pair facts (the target's training photo against its evaluation
photo: can impersonating the training photo succeed at all?) are the
per-row column ``cos_target_pair``: the same value on every row of a
(model, target); its mean over a model's distinct targets is
``target_pair_cos``.

Threshold columns are named without dots: ``thr_far_0p1``, ``thr_far_0p01``,
``thr_far_0p001`` (``p`` for the decimal point) hold each model's cosine
threshold at FAR 0.1 / 0.01 / 0.001 (null where the model has none);
``tau1`` / ``tau2`` are the thresholds at the run's ``evaluation.asr_far`` /
``evaluation.esr_far`` that the flags use. Cosines and thresholds are
float32, as the embeddings; comparisons happen in float32.

Commercial face-verification services (Table III) are rows of role
``"commercial"`` (model: the service, ``facepp``/``tencent``/``aliyun``;
transform ``"none"``; kind ``"protected"`` or ``"clean"``) for a seeded
subset of the images: their score is the service's confidence in [0, 100]
(``api_confidence``, ``api_confidence_restored`` for the restored face) with
the service's own thresholds (``api_thr_far_0p001`` ... ``_0p00001``); the
cosine, τ and flag columns are null there, and the ``api_*`` columns are
null on every FR-model row.

The version (:data:`RECORDS_SCHEMA_VERSION`) is stored in the parquet
file's metadata; :func:`read_records` refuses another version. Change the
version whenever a column is added, removed, renamed or changes meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from erasablemask.models.atomic_files import atomic_path

__all__ = [
    "RECORDS_SCHEMA_VERSION", "RECORDS_SCHEMA", "RECORDS_COLUMNS", "KINDS", "ROLES", "FAR_COLUMNS",
    "RecordsVersionError", "records_frame", "write_records", "read_records", "QUALITY_COLUMNS", "QUALITY_PAIRS",
    "QUALITY_METRICS", "API_FAR_COLUMNS", "API_COLUMNS",
]

RECORDS_SCHEMA_VERSION = 3  # 2: quality columns q_<metric>_<pair> (Table VI); 3: commercial rows, api_* (Table III)
VERSION_KEY = b"erasablemask.records_schema_version"

KINDS = ("protected", "clean", "attr_only", "destroyed")
ROLES = ("surrogate", "black_box", "commercial")
FAR_COLUMNS: dict[float, str] = {0.1: "thr_far_0p1", 0.01: "thr_far_0p01", 0.001: "thr_far_0p001"}
# Per-image quality (experiments/evaluation/quality.py, Table VI): q_<metric>_<pair>, float32, on the rows of
# kind "protected" with transform "none" (null elsewhere, and where the pair or the metric does not exist:
# no attribute edit, no erasion, LPIPS weights absent). In [0, 1] pixel units; PSNR in dB.
QUALITY_PAIRS = ("protected_vs_attr_only", "protected_vs_source", "restored_vs_source")
QUALITY_METRICS = ("l1", "mse", "psnr", "ssim", "lpips")
QUALITY_COLUMNS: tuple[str, ...] = tuple(f"q_{m}_{p}" for p in QUALITY_PAIRS for m in QUALITY_METRICS)
# Commercial services (role 'commercial', Table III): the service's confidence in [0, 100] and its own
# confidence thresholds at FAR 1e-3 / 1e-4 / 1e-5 (the FARs Face++ and Aliyun return; Tencent's documented).
API_FAR_COLUMNS: dict[str, str] = {"1e-3": "api_thr_far_0p001", "1e-4": "api_thr_far_0p0001",
                                   "1e-5": "api_thr_far_0p00001"}
API_COLUMNS: tuple[str, ...] = ("api_confidence", "api_confidence_restored", *API_FAR_COLUMNS.values())


def _field(name: str, type_: pa.DataType, doc: str, *, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


RECORDS_SCHEMA = pa.schema([
    _field("run", pa.string(), "run id or name the evaluated scheme comes from"),
    _field("method", pa.string(), "the Protection evaluated (Protection.name), on every row of its evaluation"),
    _field("kind", pa.string(), "which image was scored: 'protected', 'clean' (source face), 'attr_only' "
           "(the scheme's attribute edit without protection) or 'destroyed' (heavy blur of the protected face)"),
    _field("stage", pa.int64(), "curriculum stage of the evaluated checkpoint (null: no stages)", nullable=True),
    _field("seed", pa.int64(), "the config's seed"),
    _field("split", pa.string(), "source images' split: 'val' (per-epoch validation) or 'test'"),
    _field("model", pa.string(), "FR model name"),
    _field("role", pa.string(), "the FR model's role: 'surrogate' (white-box, attacked) or 'black_box'"),
    _field("transform", pa.string(), "evaluation transform applied to the protected face before FR and erasion "
           "('none' for the baselines)"),
    _field("sample", pa.int64(), "data-set index of the source image"),
    _field("source_identity", pa.int64(), "identity of the source (null: unknown)", nullable=True),
    _field("target", pa.string(), "the impersonated target identity's name"),
    _field("cos_target", pa.float32(), "cos(FR(image), FR(target's evaluation photo)) (Eq. 17's similarity; "
           "null on 'commercial' rows)", nullable=True),
    _field("cos_source", pa.float32(), "cos(FR(image), FR(another photo of the source)) (null: identities "
           "unknown)", nullable=True),
    _field("cos_restored_target", pa.float32(), "cos(FR(erase(image)), FR(target's evaluation photo)) (Eq. 18's "
           "similarity; null: the scheme cannot erase, or a baseline row)", nullable=True),
    _field("cos_restored_source", pa.float32(), "cos(FR(erase(image)), FR(another photo of the source)) (null: "
           "cannot erase, baseline row or identities unknown)", nullable=True),
    _field("cos_target_pair", pa.float32(), "cos(FR(target's training photo), FR(target's evaluation photo)) (null "
           "on 'commercial' rows)", nullable=True),
    _field("thr_far_0p1", pa.float32(), "the model's cosine threshold at FAR 0.1 (null: uncalibrated)", nullable=True),
    _field("thr_far_0p01", pa.float32(), "the model's cosine threshold at FAR 0.01 (identity restoration's)",
           nullable=True),
    _field("thr_far_0p001", pa.float32(), "the model's cosine threshold at FAR 0.001 (null: uncalibrated)",
           nullable=True),
    _field("tau1", pa.float32(), "τ1: the threshold at evaluation.asr_far (ASR, Eq. 17; null on 'commercial' rows)",
           nullable=True),
    _field("tau2", pa.float32(), "τ2: the threshold at evaluation.esr_far (ESR, Eq. 18; null on 'commercial' rows)",
           nullable=True),
    _field("attack_success", pa.bool_(), "cos_target > tau1 (the row counts for ASR; null on 'commercial' rows)",
           nullable=True),
    _field("erasion_success", pa.bool_(), "cos_restored_target < tau2 (counts for ESR; null without erasion)",
           nullable=True),
    _field("identity_restored", pa.bool_(), "cos_restored_source > thr_far_0p01 (counts for the identity-"
           "restoration rate; null without erasion or identities)", nullable=True),
    *(_field(c, pa.float32(), f"per-image quality {c[2:]} (Table VI; [0, 1] pixel units, PSNR in dB; only on "
             f"'protected' rows with transform 'none', else null)", nullable=True) for c in QUALITY_COLUMNS),
    _field("api_confidence", pa.float32(), "the commercial service's confidence in [0, 100] that the image and the "
           "target's evaluation photo show one person (Table III's Attack; 0 where it found no face; only on "
           "'commercial' rows)", nullable=True),
    _field("api_confidence_restored", pa.float32(), "the service's confidence for erase(image) and the target's "
           "evaluation photo (Table III's Erasion; null: cannot erase, a baseline row, or not 'commercial')",
           nullable=True),
    *(_field(c, pa.float32(), f"the service's own confidence threshold at FAR {far} (per response for Face++ and "
             f"Aliyun, documented for Tencent; only on 'commercial' rows)", nullable=True)
      for far, c in API_FAR_COLUMNS.items()),
], metadata={VERSION_KEY: str(RECORDS_SCHEMA_VERSION).encode()})

RECORDS_COLUMNS: tuple[str, ...] = tuple(RECORDS_SCHEMA.names)

# Nullable pandas dtypes for the integer and boolean columns (numpy's cannot hold nulls);
# float32 nulls are NaN, strings pandas' own.
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


class RecordsVersionError(ValueError):
    """A records file was written under another schema version (or by something else)."""


def _to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def _to_table(df: pd.DataFrame, what: str) -> pa.Table:
    missing = [c for c in RECORDS_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in RECORDS_COLUMNS]
    if missing or extra:
        raise ValueError(f"{what} do not fit records schema v{RECORDS_SCHEMA_VERSION}: missing columns "
                         f"{missing or 'none'}, unknown columns {extra or 'none'}; build them with records_frame")
    try:
        return pa.Table.from_pandas(df[list(RECORDS_COLUMNS)], schema=RECORDS_SCHEMA, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"{what} do not fit records schema v{RECORDS_SCHEMA_VERSION}: {err}") from None


def records_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """A records DataFrame with the schema's dtypes, from whole columns (sequences or numpy arrays).

    Args:
        columns: every column of :data:`RECORDS_COLUMNS`, each of the same length (None/NaN for nulls);
            the quality and commercial columns (:data:`QUALITY_COLUMNS`, :data:`API_COLUMNS`) may be left
            out (null).

    Raises:
        ValueError: a column missing or unknown, or a value that does not fit its type.
    """
    missing = [c for c in RECORDS_COLUMNS if c not in columns and c not in QUALITY_COLUMNS + API_COLUMNS]
    extra = [c for c in columns if c not in RECORDS_COLUMNS]
    if missing or extra:
        raise ValueError(f"records columns do not fit schema v{RECORDS_SCHEMA_VERSION}: missing {missing or 'none'}, "
                         f"unknown {extra or 'none'}")
    n = len(next(iter(columns.values()))) if columns else 0
    arrays = []
    for f in RECORDS_SCHEMA:
        try:  # from_pandas: NaN and None are nulls; quality and commercial columns not given are null
            values = columns[f.name] if f.name in columns else [None] * n
            arrays.append(pa.array(values, type=f.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"records column '{f.name}' does not fit its type {f.type}: {err}") from None
    try:
        table = pa.Table.from_arrays(arrays, schema=RECORDS_SCHEMA)
    except (pa.ArrowInvalid, ValueError) as err:
        raise ValueError(f"records columns do not fit schema v{RECORDS_SCHEMA_VERSION}: {err}") from None
    return _to_frame(table)


def write_records(df: pd.DataFrame, path: str | Path) -> Path:
    """Write records to a parquet file, atomically, with the schema version in its metadata.

    Args:
        df: rows with exactly the columns of :data:`RECORDS_COLUMNS` (any order).
        path: destination ``.parquet`` file (its folder is created).

    Returns:
        ``path``.

    Raises:
        ValueError: the columns or their values do not fit the schema (named).
    """
    path = Path(path)
    table = _to_table(df, f"records for '{path}'")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_records(path: str | Path) -> pd.DataFrame:
    """Read a records parquet file written by :func:`write_records`.

    Raises:
        FileNotFoundError: no such file.
        RecordsVersionError: the file has no records schema version or another one (named, with the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file '{path}' not found; evaluate a run to write it")
    meta = pq.read_schema(path).metadata or {}
    found = meta.get(VERSION_KEY)
    if found is None:
        raise RecordsVersionError(f"'{path}' is not an erasablemask records file (no schema version in its "
                                  f"metadata); write records with write_records")
    if found.decode() != str(RECORDS_SCHEMA_VERSION):
        raise RecordsVersionError(
            f"records file '{path}' has schema version {found.decode()}, this erasablemask reads version "
            f"{RECORDS_SCHEMA_VERSION}; evaluate the run again, or read the file with the erasablemask that wrote it"
        )
    return _to_frame(pq.read_table(path, schema=RECORDS_SCHEMA))
