"""erasablemask collect: one dataset from run folders or an MLflow experiment; idempotent and incremental."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from _synthetic_records import synthetic_records, write_run_dir

from erasablemask.analysis.collect import collect_experiment, collect_run_dirs
from erasablemask.analysis.dataset import load_records, load_runs
from erasablemask.analysis.schema import RecordsFileError
from erasablemask.experiments.evaluation.records import RECORDS_SCHEMA, read_records, write_records


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["run", "method", "model", "kind", "transform", "sample"]).reset_index(drop=True)


def test_collect_twice_adds_nothing_and_reads_back_the_records(tmp_path: Path):
    runs = tmp_path / "runs"
    a = write_run_dir(runs, "a", synthetic_records("a"), params={"data": {"kind": "miniworld"}, "seed": 0},
                      metrics={"asr/bb_one": 0.5, "asr@jpeg/bb_one": 0.25})
    write_run_dir(runs, "b", synthetic_records("b", "pgd", erases=False))
    first = collect_run_dirs([runs], tmp_path / "ds")
    assert sorted(first.added) == ["a", "b"] and not first.updated and not first.unchanged
    before = _snapshot(tmp_path / "ds")
    second = collect_run_dirs([runs], tmp_path / "ds")
    assert not second.added and not second.updated and sorted(second.unchanged) == ["a", "b"]
    assert _snapshot(tmp_path / "ds") == before  # not one file rewritten

    back = load_records(tmp_path / "ds")
    expected = pd.concat([read_records(runs / n / "records.parquet") for n in ("a", "b")], ignore_index=True)
    pd.testing.assert_frame_equal(_sorted(back), _sorted(expected))
    assert sorted(p.name for p in (tmp_path / "ds" / "records").iterdir()) == ["run=a", "run=b"]
    assert (tmp_path / "ds" / "records" / "run=a" / "method=erasablemask" / "part-0.parquet").is_file()

    facts = load_runs(tmp_path / "ds").set_index("run")
    assert facts.at["a", "params.data.kind"] == "miniworld" and facts.at["a", "params.seed"] == "0"
    assert facts.at["a", "metrics.test/asr_at_jpeg/bb_one"] == 0.25  # the name the tracker gives it in MLflow
    assert facts.at["b", "methods"] == "pgd" and facts.at["a", "n_records"] == len(read_records(a / "records.parquet"))
    assert load_records(tmp_path / "ds", method="pgd")["run"].unique().tolist() == ["b"]


def test_collect_is_incremental_and_a_reevaluated_run_replaces_its_rows(tmp_path: Path):
    runs = tmp_path / "runs"
    write_run_dir(runs, "a", synthetic_records("a"))
    collect_run_dirs([runs], tmp_path / "ds")
    write_run_dir(runs, "c", synthetic_records("c", n_identities=2))
    s = collect_run_dirs([runs], tmp_path / "ds")
    assert (s.added, s.updated, s.unchanged) == (["c"], [], ["a"])
    smaller = synthetic_records("a", n_identities=3, transforms=("none",))
    write_records(smaller, runs / "a" / "records.parquet")
    s = collect_run_dirs([runs / "a"], tmp_path / "ds")
    assert s.updated == ["a"]
    back = load_records(tmp_path / "ds")
    assert (back["run"] == "a").sum() == len(smaller) and (back["run"] == "c").sum() > 0
    assert len(load_runs(tmp_path / "ds")) == 2
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.name.startswith(".")]  # no staging left


def test_a_records_file_of_another_version_is_refused_naming_it(tmp_path: Path):
    run = write_run_dir(tmp_path / "runs", "old", synthetic_records("old"))
    table = pq.read_table(run / "records.parquet")
    pq.write_table(table.replace_schema_metadata({b"erasablemask.records_schema_version": b"0"}),
                   run / "records.parquet")
    with pytest.raises(RecordsFileError, match=r"old/records\.parquet' has schema version 0"):
        collect_run_dirs([run], tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="no records.parquet in or below"):
        collect_run_dirs([tmp_path / "ds"], tmp_path / "ds2")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not an analysis dataset"):
        collect_run_dirs([tmp_path / "runs"], tmp_path / "busy")


def _tracked_run(tmp_path: Path):
    """A run folder with an sqlite MLflow store beside it, as the pipeline leaves a tracked run."""
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "tracked"
    run_dir.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.create_experiment("erasablemask", artifact_location=(run_dir / "mlartifacts").as_uri())
    run = client.create_run(exp, run_name="train-abc", tags={"method": "erasablemask", "dataset": "miniworld"})
    run_id = run.info.run_id
    client.log_param(run_id, "attack.method", "meta_auxiliary")
    client.log_param(run_id, "data.kind", "miniworld")
    client.log_metric(run_id, "test/asr/bb_one", 0.75)
    write_records(synthetic_records(run_id), run_dir / "records.parquet")
    client.log_artifact(run_id, str(run_dir / "records.parquet"))
    stage = client.create_run(exp, run_name="stage1", tags={"mlflow.parentRunId": run_id})  # no records: skipped
    client.set_terminated(stage.info.run_id)
    client.set_terminated(run_id)
    return run_dir, run_id


def test_collect_reads_mlflow_facts_from_the_store_beside_the_run_and_from_an_experiment(tmp_path: Path):
    run_dir, run_id = _tracked_run(tmp_path)
    s = collect_run_dirs([run_dir], tmp_path / "ds")
    assert s.added == [run_id]
    facts = load_runs(tmp_path / "ds").set_index("run").loc[run_id]
    assert facts["params.attack.method"] == "meta_auxiliary" and facts["tags.method"] == "erasablemask"
    assert facts["metrics.test/asr/bb_one"] == 0.75 and facts["status"] == "FINISHED"
    assert facts["run_name"] == "train-abc" and facts["experiment"] == "erasablemask"
    assert facts["tracking_uri"] == f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    s = collect_experiment(uri, "erasablemask", tmp_path / "ds_mlflow")
    assert s.added == [run_id]  # the stage run has no records artifact
    pd.testing.assert_frame_equal(_sorted(load_records(tmp_path / "ds_mlflow")), _sorted(load_records(tmp_path / "ds")))
    assert collect_experiment(uri, "erasablemask", tmp_path / "ds_mlflow").unchanged == [run_id]
    with pytest.raises(ValueError, match=r"no MLflow experiment 'nope'.*'erasablemask'\]"):
        collect_experiment(uri, "nope", tmp_path / "ds_x")


def test_dataset_files_keep_the_records_types_with_run_and_method_in_the_partition_path(tmp_path: Path):
    write_run_dir(tmp_path / "runs", "a", synthetic_records("a"))
    collect_run_dirs([tmp_path / "runs"], tmp_path / "ds")
    part = pq.read_schema(tmp_path / "ds" / "records" / "run=a" / "method=erasablemask" / "part-0.parquet")
    expected = [(f.name, f.type) for f in RECORDS_SCHEMA if f.name not in ("run", "method")]
    assert [(f.name, f.type) for f in part] == expected
    assert [str(t) for t in load_records(tmp_path / "ds").dtypes] == [
        str(t) for t in read_records(tmp_path / "runs" / "a" / "records.parquet").dtypes]


def test_a_run_key_with_odd_characters_round_trips_and_is_collected_once(tmp_path: Path):
    key = "sweep/trial 1~γ=0.1"
    write_run_dir(tmp_path / "runs", "t1", synthetic_records(key))
    assert collect_run_dirs([tmp_path / "runs"], tmp_path / "ds").added == [key]
    assert collect_run_dirs([tmp_path / "runs"], tmp_path / "ds").unchanged == [key]
    assert load_records(tmp_path / "ds")["run"].unique().tolist() == [key]
    assert load_records(tmp_path / "ds", run=key)["run"].nunique() == 1
