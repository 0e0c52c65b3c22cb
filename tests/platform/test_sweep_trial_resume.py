"""A sweep's restarted trial resumes its folder from the last checkpoint and stays one MLflow run
(platform/sweep.py ``run_trial``; the whole kill-and-resume sweep is tests/platform/test_sweep.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from erasablemask.experiments.config.sweep import load_sweep
from erasablemask.platform.runners import in_process
from erasablemask.platform.sweep import _sweep_context, run_trial, sweep_dir
from erasablemask.platform.tracking import RunRef, _experiment_id


class WorkerDied(RuntimeError):
    """Stands for the trial's process dying (driver killed, worker lost) right after a checkpoint."""


def _stage2_lines(trial_dir: Path) -> list[str]:
    lines = (trial_dir / "metrics.jsonl").read_text().splitlines()
    return [line for line in lines if json.loads(line)["stage"] == 2]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.slow
def test_a_restarted_trial_trains_only_the_epochs_after_its_checkpoint_into_the_same_mlflow_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path_factory.getbasetemp() / "erasablemask_home_sweep"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # The tiny sweep: stage 1 (1 epoch) from the cache, stage 2 for 2 epochs of one step, evaluated on 8 images.
    sweep = load_sweep("tiny", [f"storage={tmp_path / 'sweeps'}"])
    root = sweep_dir(sweep)
    root.mkdir(parents=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = _experiment_id(client, sweep.base_config(), uri, root)  # artifacts under tmp_path
    parent = client.create_run(exp, run_name="sweep-tiny").info.run_id
    ctx = _sweep_context(sweep, root, uri, exp, parent, cpus_per_trial=1.0)
    params = {"stage2.lambda_adv": 100.0, "protection.beta": 0.5, "seed": 0}
    trial_dir = root / "trials" / "t0"

    # Attempt 1 dies right after stage 2's epoch-1 checkpoint (and its metrics) was written.
    real_log = RunRef.log_metrics

    def dies_after_stage2_epoch1(self: RunRef, metrics: dict, step: int) -> None:
        real_log(self, metrics, step)
        if metrics.get("stage") == 2 and metrics.get("epoch") == 1:
            raise WorkerDied("the trial died after stage 2's epoch-1 checkpoint")

    with monkeypatch.context() as m:
        m.setattr(RunRef, "log_metrics", dies_after_stage2_epoch1)
        with pytest.raises(WorkerDied):
            run_trial(sweep, params, ctx, "t0", runner="in-process")
    before = _stage2_lines(trial_dir)
    assert [json.loads(line)["epoch"] for line in before] == [1]
    (first_run,) = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    (first_stage2,) = client.search_runs([exp], f"tags.mlflow.parentRunId = '{first_run.info.run_id}'")
    assert first_run.info.status == "FAILED" and first_stage2.data.tags["stage"] == "2"

    # Attempt 2 (Tune restarting the trial): stage 2 goes on from the epoch-1 checkpoint and trains epoch 2 only.
    calls: list[tuple[int, Path | None]] = []
    real_stage = in_process.run_stage

    def spy(cfg, stage, **kw):
        calls.append((stage, kw["resume"]))
        return real_stage(cfg, stage, **kw)

    monkeypatch.setattr(in_process, "run_stage", spy)
    report = run_trial(sweep, params, ctx, "t0", runner="in-process")
    assert calls == [(2, trial_dir / "stage2" / "checkpoints" / "stage2_epoch0001")]
    after = _stage2_lines(trial_dir)
    assert after[0] == before[0]  # epoch 1 was not trained again (a retrained epoch logs its own time/epoch_s)
    assert [json.loads(line)["epoch"] for line in after] == [1, 2]
    assert report["resumed"] == 1 and report["restored"] == 0 and report["phase"] == "test"
    assert 0.0 <= report["objective/asr/black_box_mean"] <= 1.0

    # MLflow: still one trial run and one stage-2 run (the first attempt's, continued), FINISHED, each epoch once.
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in runs] == [first_run.info.run_id] == [report["mlflow_run"]]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["objective/asr/black_box_mean"] == pytest.approx(report["objective/asr/black_box_mean"])
    stage_runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{first_run.info.run_id}'")
    assert [r.info.run_id for r in stage_runs] == [first_stage2.info.run_id]
    assert stage_runs[0].info.status == "FINISHED"
    assert [h.step for h in client.get_metric_history(first_stage2.info.run_id, "global_step")] == [1, 2]
    records = pd.read_parquet(trial_dir / "records.parquet")
    assert set(records["run"].astype(str)) == {first_run.info.run_id}  # the dataset names the one run

    # Attempt 3 (the driver died after the trial finished): reported from MLflow, nothing trained.
    calls.clear()
    again = run_trial(sweep, params, ctx, "t0", runner="in-process")
    assert calls == [] and again["restored"] == 1 and again["mlflow_run"] == first_run.info.run_id
    assert again["objective/asr/black_box_mean"] == report["objective/asr/black_box_mean"]
