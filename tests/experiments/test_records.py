"""The per-sample records schema: parquet round trip, nulls, version check, column docs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erasablemask.experiments.evaluation.records import (
    RECORDS_COLUMNS,
    RECORDS_SCHEMA,
    RECORDS_SCHEMA_VERSION,
    RecordsVersionError,
    read_records,
    records_frame,
    write_records,
)


def _columns() -> dict[str, list]:
    """Two rows: a protected face of a scheme that erases, and a clean baseline row with nulls."""
    return {
        "run": ["r1", "r1"], "method": ["erasablemask", "erasablemask"], "kind": ["protected", "clean"],
        "stage": [3, 3], "seed": [7, 7], "split": ["test", "test"], "model": ["m", "m"],
        "role": ["surrogate", "surrogate"], "transform": ["jpeg", "none"], "sample": [12, 12],
        "source_identity": [4, None], "target": ["miniworld:id9", "miniworld:id9"],
        "cos_target": [0.91, -0.2], "cos_source": [0.3, None], "cos_restored_target": [0.05, None],
        "cos_restored_source": [0.8, None], "cos_target_pair": [0.6, 0.6], "thr_far_0p1": [0.4, 0.4],
        "thr_far_0p01": [0.55, 0.55], "thr_far_0p001": [None, None], "tau1": [0.55, 0.55], "tau2": [0.4, 0.4],
        "attack_success": [True, False], "erasion_success": [True, None], "identity_restored": [True, None],
    }


def test_records_round_trip_through_parquet_with_nulls_and_dtypes(tmp_path: Path):
    df = records_frame(_columns())
    assert tuple(df.columns) == RECORDS_COLUMNS
    assert df["cos_target"].dtype == "float32" and str(df["erasion_success"].dtype) == "boolean"
    path = write_records(df, tmp_path / "sub" / "records.parquet")
    assert path == tmp_path / "sub" / "records.parquet"
    back = read_records(path)
    pd.testing.assert_frame_equal(back, df)
    assert back["source_identity"].isna().tolist() == [False, True]
    assert back["erasion_success"].isna().tolist() == [False, True]
    # Nulls are parquet nulls (not NaN values), so other readers see them as missing too.
    table = pq.read_table(path)
    assert table.column("cos_source").null_count == 1 and table.column("thr_far_0p001").null_count == 2
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["records.parquet"]  # no temporary left


def test_every_column_is_documented_and_the_version_is_in_the_metadata(tmp_path: Path):
    assert all(f.metadata and f.metadata[b"doc"] for f in RECORDS_SCHEMA)
    path = write_records(records_frame(_columns()), tmp_path / "r.parquet")
    meta = pq.read_schema(path).metadata
    assert meta[b"erasablemask.records_schema_version"] == str(RECORDS_SCHEMA_VERSION).encode()


def test_a_file_of_another_schema_version_is_refused_naming_the_file(tmp_path: Path):
    table = pa.Table.from_pandas(records_frame(_columns()), schema=RECORDS_SCHEMA, preserve_index=False)
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"erasablemask.records_schema_version": b"0"}), old)
    with pytest.raises(RecordsVersionError, match=r"'.*old\.parquet' has schema version 0.*reads version"):
        read_records(old)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(RecordsVersionError, match=r"foreign\.parquet' is not an erasablemask records file"):
        read_records(foreign)


def test_rows_that_do_not_fit_the_schema_are_refused_before_writing(tmp_path: Path):
    df = records_frame(_columns()).drop(columns=["tau2"]).assign(asr=1.0)
    with pytest.raises(ValueError, match=r"missing columns \['tau2'\], unknown columns \['asr'\]"):
        write_records(df, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()
    cols = _columns()
    cols["sample"] = ["twelve", "twelve"]
    with pytest.raises(ValueError, match="records column 'sample' does not fit its type int64"):
        records_frame(cols)
