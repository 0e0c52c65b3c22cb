"""A generator competitor trained through a runner is tracked like a curriculum stage: trial + child run in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from _competitor_fr import projection_fr_models
from _curriculum_tiny import tiny_config

from erasablemask.experiments.attacks import build
from erasablemask.platform.competitor_training import train_competitor

TINY = {"gen_dim": 8, "gen_res_blocks": 1, "dis_dim": 8, "dis_layers": 3, "batch_size": 4, "epochs": 1}


def test_advfaces_training_is_an_mlflow_child_run_with_params_metrics_and_checkpoint(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_config()
    with projection_fr_models(cfg) as models:
        done = train_competitor(
            cfg, "advfaces", TINY, run_dir=tmp_path, runner="in-process", progress=False, max_steps_per_epoch=2
        )
        attack = build("advfaces", [models[n] for n in cfg.attack.surrogates], checkpoint=done.result.final_checkpoint)
    assert attack.hparams()["gen_dim"] == 8 and done.params["lambda_id"] == 10.0  # official default kept
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    trial, child = client.get_run(done.trial_run_id), client.get_run(done.stage_run_id)
    assert child.data.tags["mlflow.parentRunId"] == trial.info.run_id
    assert child.data.tags["stage"] == "advfaces" and child.data.tags["method"] == "advfaces"
    assert trial.data.tags["method"] == "advfaces" and child.info.status == "FINISHED"
    assert child.data.params["advfaces.gen_dim"] == "8" and child.data.params["advfaces.pert_eps"] == "3.0"
    history = client.get_metric_history(child.info.run_id, "val/cos/surrogates_mean")
    assert [m.step for m in history] == [1]
    assert "checkpoint" in [a.path for a in client.list_artifacts(child.info.run_id)]


def test_unknown_competitor_or_parameter_fails_before_any_work(tmp_path: Path):
    cfg = tiny_config()
    with pytest.raises(LookupError, match="advfaces"):
        train_competitor(cfg, "pgd", {}, run_dir=tmp_path, track=False)
    with pytest.raises(ValueError, match="no hyper-parameter lambda_idt"):
        train_competitor(cfg, "advfaces", {"lambda_idt": 1.0}, run_dir=tmp_path, track=False)
    assert not any(tmp_path.iterdir())
