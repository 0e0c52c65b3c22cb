"""The README's demo command, end to end on a tiny config: world, mini zoo, the pipeline on Ray (3 stages, evaluation), MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _curriculum_tiny import BLACK_BOX, SURROGATES, TINY


@pytest.mark.slow
def test_demo_runs_end_to_end_on_ray_and_records_everything(tmp_path: Path, monkeypatch, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from erasablemask.platform.cli.main import main

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "home"))  # a fresh cache: the zoo is trained here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "demo"
    sets = [*TINY, "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1", "compute.cpus_per_worker=1"]
    argv = ["demo", *[x for s in sets for x in ("--set", s)], "--run-dir", str(run), "--jobs", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    # The closing lines: where the results are, and how to open MLflow on them.
    db = (run / "mlflow.db").resolve()
    assert f".venv/bin/mlflow ui --backend-store-uri sqlite:///{db}" in out
    assert "MINI-WORLD numbers" in out
    assert f"report          {run / 'analysis' / 'report' / 'index.html'}" in out
    results = out.split("[4/4]")[1]
    for m in SURROGATES + BLACK_BOX:
        assert m in results  # the evaluation table names every model
    for path in ("evaluation.json", "records.parquet", "protection_grid.png", "world/grid.png",
                 "stage3/final/state.json", "analysis/report/index.html"):
        assert (run / path).is_file(), path
    for dump in ("'train/", '"train/', "Reporting training result"):  # a quiet console
        assert dump not in out

    report = json.loads((run / "evaluation.json").read_text())
    for m in SURROGATES + BLACK_BOX:
        assert 0.0 <= report["metrics"][f"asr/{m}"] <= 1.0 and 0.0 <= report["metrics"][f"esr/{m}"] <= 1.0
    assert not (run / "mlflow.json").exists()  # no pointer file: the console names the trial run
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    trials = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'all'")
    assert len(trials) == 1 and f"(trial run {trials[0].info.run_id})" in out
    parent = trials[0]
    assert parent.info.status == "FINISHED"
    m = BLACK_BOX[0]
    assert parent.data.metrics[f"test/esr/{m}"] == pytest.approx(report["metrics"][f"esr/{m}"])
    assert parent.data.metrics[f"test/asr_at_jpeg/{m}"] == pytest.approx(report["metrics"][f"asr@jpeg/{m}"])
    assert {"evaluation.json", "records.parquet", "grids", "manifest.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["stage"] for c in children) == ["1", "2", "3"]
    assert all(c.info.status == "FINISHED" and c.data.tags["runner"] == "ray" for c in children)
