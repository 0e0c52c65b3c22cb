"""MLflow tracking against a real server on 127.0.0.1: trial and stage runs, nesting under a sweep, failing fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from erasablemask.experiments.config.loading import load_config
from erasablemask.platform.tracking import (
    Tracker,
    TrackingUnavailable,
    check_tracking_uri,
    resolve_tracking_uri,
    where_lines,
)


def test_default_uri_is_sqlite_in_the_run_dir_never_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(load_config(), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_environment_uri_is_used_when_the_config_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(load_config(), tmp_path) == "http://127.0.0.1:1"


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns"])
def test_file_store_is_refused(uri: str) -> None:
    with pytest.raises(TrackingUnavailable, match="file store"):
        check_tracking_uri(uri)


def test_unreachable_server_fails_naming_the_uri() -> None:
    with pytest.raises(TrackingUnavailable, match=r"cannot reach the MLflow tracking server 'http://127\.0\.0\.1:9'"):
        check_tracking_uri("http://127.0.0.1:9", timeout=2)


def test_trial_and_stage_runs_round_trip_through_a_real_server(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    cfg = load_config(None, [f"tracking.tracking_uri={mlflow_server}", "tracking.experiment_name=tracking-test"])
    with Tracker.open(cfg, tmp_path) as tracker:
        child = tracker.start_stage(cfg, 2)
        for epoch, value in enumerate([0.5, 0.25, 0.125]):
            tracker.log_metrics(child, {"loss/adv": value, "asr/mini_a": epoch / 4}, step=epoch)
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "weights.safetensors").write_bytes(b"\x00" * 16)
        tracker.log_artifacts(child, tmp_path / "ckpt", "checkpoint")
        tracker.end_stage(child, ok=True)
        tracker.log_evaluation({"asr@jpeg/mini_a": 0.75}, [])
        parent_id = tracker.trial_run_id

    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["stage2.lambda_adv"] == "200.0"
    assert parent.data.tags["surrogates"] == "ir152,irse50,facenet"
    assert "mlflow.parentRunId" not in parent.data.tags  # a trial without a sweep is a top-level run
    assert parent.data.metrics == {"test/asr_at_jpeg/mini_a": 0.75}  # '@' is not an MLflow character
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert [r.info.run_id for r in runs] == [child]
    history = client.get_metric_history(child, "loss/adv")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert runs[0].data.tags["stage"] == "2"
    artifacts = {a.path for a in client.list_artifacts(child, "checkpoint")}
    assert artifacts == {"checkpoint/weights.safetensors"}
    manifest_path = client.download_artifacts(parent_id, "manifest.json", str(tmp_path / "dl"))
    manifest = json.loads(Path(manifest_path).read_text())
    assert manifest["config_digest"] == cfg.digest() and manifest["packages"]["torch"].startswith("2.14")


def test_a_trial_with_a_parent_run_nests_under_it_in_its_experiment(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    sweep_exp = client.create_experiment(f"sweep-{tmp_path.name}")
    sweep = client.create_run(sweep_exp, run_name="sweep").info.run_id
    cfg = load_config(None, [f"tracking.tracking_uri={mlflow_server}", "tracking.experiment_name=another-experiment"])
    with Tracker.open(cfg, tmp_path, parent_run_id=sweep, runner="in-process") as tracker:
        with tracker.stage_run(cfg, 1) as stage_run:
            pass
    trial = client.get_run(tracker.trial_run_id)
    assert trial.data.tags["mlflow.parentRunId"] == sweep and trial.info.experiment_id == sweep_exp
    assert client.get_run(stage_run).data.tags["mlflow.parentRunId"] == tracker.trial_run_id
    assert trial.info.status == client.get_run(stage_run).info.status == "FINISHED"

    with pytest.raises(TrackingUnavailable, match="parent run 'no-such-run' is not a run at"):
        with Tracker.open(cfg, tmp_path, parent_run_id="no-such-run"):
            pass


def test_where_lines_name_the_trial_run_and_the_ui_command() -> None:
    lines = where_lines("sqlite:////tmp/r/mlflow.db", "abc123")
    assert lines[0].endswith("sqlite:////tmp/r/mlflow.db  (trial run abc123)")
    assert "mlflow ui --backend-store-uri sqlite:////tmp/r/mlflow.db" in lines[1]
    assert where_lines("http://h:5000", "abc")[1].strip() == "open the UI:    http://h:5000"
    assert where_lines(None, None) == ["  MLflow          not tracked (--no-track)"]
