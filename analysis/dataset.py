"""The analysis dataset: every collected run's per-sample records and its run-level facts, in one folder.

Layout (open it with pandas, pyarrow or DuckDB; README "Analysis")::

    DATASET/
      dataset.json                      format name and version, records schema version
      records/run=<run>/method=<method>/part-0.parquet
                                        the runs' records (columns: analysis.schema), hive-partitioned
      runs.parquet                      one row per run: where it came from, the records file's sha256, its partition,
                                        MLflow facts as columns params.<key>, tags.<key>, metrics.<key>
      artifacts/<run>/protection_grid.png  the run's image grid (source | edited | protected | erased), if any

A run is keyed by the ``run`` value of its records (the trial's MLflow run
id when tracked, else the run folder's name). :func:`add_run` replaces a
run's partition and its row together, or does nothing when both are
unchanged, so collecting twice adds nothing and a re-evaluated run replaces
its old rows. Files are written beside their destination and renamed into
place, so a reader never sees half a partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from erasablemask.analysis.schema import (
    RECORDS_ARROW_SCHEMA,
    RECORDS_COLUMNS,
    RECORDS_SCHEMA_VERSION,
    check_records_schema,
)

__all__ = [
    "DATASET_FORMAT", "DATASET_VERSION", "PARTITIONING", "init_dataset", "add_run", "load_records", "load_runs",
    "grid_path", "file_sha256", "read_records_file", "write_bytes_atomic",
]

DATASET_FORMAT = "erasablemask-analysis-dataset"
DATASET_VERSION = 1
PARTITIONING = ds.partitioning(pa.schema([("run", pa.string()), ("method", pa.string())]), flavor="hive")
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
_VOLATILE = ("collected_at", "partition")  # run-row columns that do not make a run "changed"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_file(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it onto ``path``.

    (models/atomic_files.py does the same; analysis may not import it, DESIGN.md "Layers".)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the dataset and the report are for other readers too
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file renamed into place."""
    payload = data.encode() if isinstance(data, str) else data
    _replace_file(Path(path), lambda p: p.write_bytes(payload))
    return Path(path)


def _replace_dir(staged: Path, dest: Path) -> None:
    """Put the folder ``staged`` at ``dest`` (same file system): the old one is moved aside, then removed."""
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        os.replace(dest, old)
    os.replace(staged, dest)
    if old is not None:
        shutil.rmtree(old)


def init_dataset(root: Path) -> Path:
    """Create the dataset folder (or check an existing one is a dataset of this version).

    Raises:
        ValueError: ``root`` holds files but no ``dataset.json``, or one of another format or version.
    """
    root = Path(root)
    marker = root / "dataset.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta.get("format") != DATASET_FORMAT or meta.get("version") != DATASET_VERSION:
            raise ValueError(f"'{root}' is a dataset of format {meta.get('format')!r} version {meta.get('version')}, "
                             f"this erasablemask writes {DATASET_FORMAT!r} version {DATASET_VERSION}; collect into a "
                             f"new folder")
        if meta.get("records_schema_version") != RECORDS_SCHEMA_VERSION:
            raise ValueError(f"dataset '{root}' holds records of schema version {meta.get('records_schema_version')}"
                             f", this analysis reads version {RECORDS_SCHEMA_VERSION}; collect into a new folder")
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"'{root}' is not empty and is not an analysis dataset (no dataset.json); pass an empty or "
                         f"new folder to --out")
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "records_schema_version": RECORDS_SCHEMA_VERSION}
    _replace_file(marker, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return root


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _same_value(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)  # parquet may turn an int column with gaps into floats
    return str(a) == str(b)


def _same_row(old: pd.Series, new: dict[str, Any]) -> bool:
    """Whether a run's stored row equals its new facts (``collected_at`` aside; a missing column is a null)."""
    keys = {k for k in (*old.index, *new) if k not in _VOLATILE}
    return all(_same_value(old.get(k), new.get(k)) for k in keys)


def add_run(root: Path, run: str, records: pa.Table, facts: dict[str, Any], grid: Path | None = None) -> str:
    """Put one run's records and facts in the dataset.

    Args:
        root: the dataset (:func:`init_dataset` first).
        run: the run key (the records' ``run`` value).
        records: the run's rows (records columns, every ``run`` equal to ``run``).
        facts: the run's row of ``runs.parquet`` (must hold ``records_sha256``; ``run`` is set here).
        grid: the run's protection grid PNG, copied under ``artifacts/``.

    Returns:
        ``"added"`` (a new run), ``"updated"`` (its records or facts changed) or ``"unchanged"`` (nothing written).
    """
    root = Path(root)
    facts = {**facts, "run": run}
    runs = load_runs(root)
    previous = runs[runs["run"] == run]
    if len(previous) and _same_row(previous.iloc[0], facts):
        stored = previous.iloc[0].get("partition")
        if isinstance(stored, str) and (root / "records" / stored).is_dir():
            return "unchanged"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        ds.write_dataset(records.select(list(RECORDS_COLUMNS)).cast(RECORDS_ARROW_SCHEMA), staging,
                         format="parquet", partitioning=PARTITIONING, basename_template="part-{i}.parquet")
        (written,) = [p for p in staging.iterdir() if p.is_dir()]  # run=<run, as pyarrow encodes it>
        (root / "records").mkdir(exist_ok=True)
        facts["partition"] = written.name
        _replace_dir(written, root / "records" / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if grid is not None and Path(grid).is_file():
        dest = grid_path(root, run)
        _replace_file(dest, lambda p: shutil.copyfile(grid, p))
    others = runs[runs["run"] != run]
    table = pd.concat([others, pd.DataFrame([facts])], ignore_index=True) if len(others) else pd.DataFrame([facts])
    _replace_file(root / "runs.parquet", lambda p: table.to_parquet(p, index=False))
    return "updated" if len(previous) else "added"


def grid_path(root: Path, run: str) -> Path:
    """Where the dataset keeps ``run``'s protection grid (it may not exist)."""
    return Path(root) / "artifacts" / urllib.parse.quote(run, safe="") / "protection_grid.png"


def load_runs(root: Path) -> pd.DataFrame:
    """The run-level facts: one row per run (empty frame with a ``run`` column when none was collected)."""
    path = Path(root) / "runs.parquet"
    if not path.is_file():
        return pd.DataFrame({"run": pd.Series([], dtype="str")})
    return pd.read_parquet(path)


def load_records(root: Path, **filters: str | list[str]) -> pd.DataFrame:
    """Every collected record, in the records' column order, with nullable ints and booleans.

    Args:
        root: the dataset folder.
        filters: optional ``run=`` / ``method=`` values (a string or a list) read only those partitions.

    Raises:
        FileNotFoundError: ``root`` is not a dataset (names the collect command).
    """
    root = Path(root)
    if not (root / "dataset.json").is_file():
        raise FileNotFoundError(f"'{root}' is not an analysis dataset (no dataset.json); build it with "
                                f"`erasablemask collect RUN_DIR... --out {root}`")
    if not (root / "records").is_dir():
        return RECORDS_ARROW_SCHEMA.empty_table().to_pandas(types_mapper=_PANDAS_TYPES.get)
    data = ds.dataset(root / "records", format="parquet", partitioning=PARTITIONING, schema=RECORDS_ARROW_SCHEMA)
    expr = None
    for column, value in filters.items():
        values = [value] if isinstance(value, str) else list(value)
        term = ds.field(column).isin(values)
        expr = term if expr is None else expr & term
    table = data.to_table(filter=expr).select(list(RECORDS_COLUMNS))
    return table.to_pandas(types_mapper=_PANDAS_TYPES.get)


def read_records_file(path: Path) -> pa.Table:
    """A records.parquet file as an arrow table, checked against :mod:`~erasablemask.analysis.schema`."""
    check_records_schema(pq.read_schema(path), str(path))
    return pq.read_table(path, columns=list(RECORDS_COLUMNS))
