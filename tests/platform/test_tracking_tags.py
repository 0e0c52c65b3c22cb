"""The tags and headline metrics a comparison dashboard reads: run_tags, headline_metrics, a trial's runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
from erasablemask.platform.tracking import Tracker, headline_metrics, mlflow_key, run_tags, target_tag


def test_run_tags_name_method_data_models_sweep_seed_and_target() -> None:
    cfg = load_config()
    tags = run_tags(cfg, stage="all", runner="ray")
    assert tags["method"] == ErasableMaskProtection.name == "erasablemask"  # the records' `method` column
    assert tags["attack"] == "meta_auxiliary"
    assert (tags["surrogates"], tags["black_box"]) == ("ir152,irse50,facenet", "mobile_face,arcface_r100,cosface_r100")
    assert (tags["dataset"], tags["data_kind"]) == ("miniworld", "mini-world (synthetic)")
    assert (tags["sweep"], tags["seed"], tags["target"]) == ("none", "0", "miniworld_heldout/seeded x1")
    assert (tags["stage"], tags["runner"], tags["config_digest"]) == ("all", "ray", cfg.digest())
    assert all(isinstance(v, str) for v in tags.values())


def test_run_tags_follow_the_config_and_the_sweep() -> None:
    cfg = load_config(None, ["seed=7", "attack.method=ensemble", "attack.target.count=3",
                             "attack.target.selection=typical"])
    tags = run_tags(cfg, sweep="abc123")
    assert (tags["attack"], tags["seed"], tags["sweep"]) == ("ensemble", "7", "abc123")
    assert tags["target"] == "miniworld_heldout/typical x3"
    assert run_tags(cfg, method="fgsm")["method"] == "fgsm"  # a competitor's run names itself


def test_target_tag_of_explicit_images_lists_the_training_images() -> None:
    cfg = load_config(None, ["attack.target.mode=images", "attack.target.train_images=[/d/a.png,/d/b.png]",
                             "attack.target.eval_images=[/d/a2.png,/d/b2.png]"])
    assert target_tag(cfg) == "a.png,b.png"


def test_headline_metrics_flatten_the_group_means_only() -> None:
    metrics = {
        "asr/black_box_mean": 0.1875, "asr/surrogates_mean": 0.35, "asr/mini_a": 0.4,
        "esr/black_box_mean": 0.95, "idr/surrogates_mean": 0.25,
        "asr@jpeg/black_box_mean": 0.125, "esr@center_crop/surrogates_mean": 0.8, "idr@jpeg/mini_a": 0.3,
        "cos/black_box_mean": 0.4, "asr_clean/black_box_mean": 0.01, "esr_unrestored/black_box_mean": 0.38,
        "quality/mse_restored_vs_source": 0.007,
    }
    assert headline_metrics(metrics) == {
        "asr.black_box_mean": 0.1875, "asr.surrogates_mean": 0.35, "esr.black_box_mean": 0.95,
        "idr.surrogates_mean": 0.25, "asr_at_jpeg.black_box_mean": 0.125,
        "esr_at_center_crop.surrogates_mean": 0.8,
    }
    assert all(mlflow_key(k) == k for k in headline_metrics(metrics))  # logged verbatim, nothing to parse
    assert headline_metrics({"asr@jpeg/mini_a": 0.75}) == {}


def test_a_trial_and_its_stage_runs_carry_the_tags_and_the_headline_metrics(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [f"tracking.tracking_uri={uri}", "seed=3"])
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("sweep", artifact_location=(tmp_path / "mlartifacts").as_uri())  # not ./mlruns
    sweep = client.create_run(exp, run_name="sweep").info.run_id
    with Tracker.open(cfg, tmp_path, parent_run_id=sweep, runner="in-process") as tracker:
        with tracker.stage_run(cfg, 2) as stage_run:
            pass
        tracker.log_evaluation({"asr/black_box_mean": 0.5, "asr@jpeg/mini_a": 0.75, "esr/surrogates_mean": 0.9},
                               [], targets=["miniworld:id47", "miniworld:id3"])
    trial = client.get_run(tracker.trial_run_id)
    for run in (trial, client.get_run(stage_run)):
        assert (run.data.tags["sweep"], run.data.tags["seed"], run.data.tags["method"]) == (sweep, "3", "erasablemask")
        assert run.data.tags["target"] == "miniworld_heldout/seeded x1"
    assert trial.data.tags["targets"] == "miniworld:id47,miniworld:id3"
    assert trial.data.metrics == pytest.approx({
        "test/asr/black_box_mean": 0.5, "test/asr_at_jpeg/mini_a": 0.75, "test/esr/surrogates_mean": 0.9,
        "asr.black_box_mean": 0.5, "esr.surrogates_mean": 0.9,
    })
