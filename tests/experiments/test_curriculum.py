"""The three-stage curriculum on a tiny real config: initialisation, exact resume of stage 2, the CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import (
    BLACK_BOX,
    SURROGATES,
    assert_same_tensors,
    state_tensors,
    strip_times,
    tiny_config,
    tiny_zoo,
)

from erasablemask.experiments.curriculum.checkpoint import find_latest_checkpoint, load_checkpoint
from erasablemask.experiments.curriculum.context import StageContext, in_process_context
from erasablemask.experiments.curriculum.faults import FaultInjected, fault_at
from erasablemask.experiments.curriculum.loop import run_stage


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        yield


@pytest.fixture(scope="module")
def stage1_final(zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stage1")
    result = run_stage(tiny_config(), 1, in_process_context(run, 1, progress=False, max_steps_per_epoch=1))
    return result.final_checkpoint


def test_stage2_starts_from_stage1_eadv_is_genc_and_restorer_is_g(stage1_final: Path):
    from erasablemask.experiments.curriculum.stage2 import Stage2Trainer

    cfg = tiny_config()
    prev = load_checkpoint(stage1_final, cfg, stage=1, purpose="input")
    trainer = Stage2Trainer(cfg, StageContext(progress=False), prev)
    g_enc = trainer.modules["generator"].enc_layers.state_dict()
    e_adv = trainer.E_adv.enc_layers.state_dict()
    assert all(torch.equal(g_enc[k], e_adv[k]) for k in g_enc)
    g = trainer.modules["generator"].state_dict()
    r = trainer.restorer.net.state_dict()
    assert all(torch.equal(g[k], r[k]) for k in g)
    assert not any(p.requires_grad for p in trainer.modules["generator"].parameters())  # G frozen
    assert set(trainer.surrogates) == set(SURROGATES) and set(trainer.black_box) == set(BLACK_BOX)


def test_stage2_without_inputs_is_refused(zoo):
    with pytest.raises(ValueError, match="final checkpoint: pass inputs"):
        run_stage(tiny_config(), 2, StageContext(progress=False))


def test_stage2_resumed_after_a_crash_ends_bitwise_equal(stage1_final: Path, tmp_path: Path):
    """Meta-auxiliary attack, noise pool, adaptive weights: crash before step 1, resume, compare every tensor."""
    cfg = tiny_config()

    def ctx(run: str, **kw):
        return in_process_context(tmp_path / run, 2, progress=False, max_steps_per_epoch=1, **kw)

    ref = run_stage(cfg, 2, ctx("ref"), inputs=stage1_final)
    with pytest.raises(FaultInjected):
        run_stage(cfg, 2, ctx("run", fault_hook=fault_at(2, 1)), inputs=stage1_final)
    latest = find_latest_checkpoint(tmp_path / "run" / "stage2", stage=2)
    resumed = run_stage(cfg, 2, ctx("run", latest_checkpoint=latest), inputs=stage1_final)
    assert_same_tensors(state_tensors(ref.final_checkpoint), state_tensors(resumed.final_checkpoint))
    assert strip_times(resumed.history) == strip_times(ref.history)
    last = ref.history[-1]
    for m in SURROGATES + BLACK_BOX:  # per-epoch validation of every model
        for key in ("val/asr", "val/esr", "val/idr", "val/asr_clean"):
            assert 0.0 <= last[f"{key}/{m}"] <= 1.0
    for m in SURROGATES:  # Eq. 11 weights after two epochs: exp(softmax) lies in (1, e)
        assert 1.0 < last[f"w/{m}"] < math.e
    # E_adv moved away from G_enc; G did not move.
    t = state_tensors(ref.final_checkpoint)
    assert not torch.equal(t["models:protector.perturbation_encoder.enc_layers.0.layers.0.weight"],
                           t["models:generator.enc_layers.0.layers.0.weight"])
    s1 = state_tensors(stage1_final)
    assert torch.equal(t["models:generator.enc_layers.0.layers.0.weight"],
                       s1["models:generator.enc_layers.0.layers.0.weight"])


def _cli(argv: list[str]) -> int:
    from erasablemask.platform.cli import train as cli_train

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_train.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_in_process_runs_all_stages_writes_metrics_and_evaluates(zoo, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    sets = [x for item in [["--set", s] for s in ("stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1")]
            for x in item]
    from _curriculum_tiny import TINY

    args = ["train", "miniworld_demo", *[x for s in TINY for x in ("--set", s)], *sets, "--in-process",
            "--run-dir", str(run), "--max-steps-per-epoch", "1", "--evaluate"]
    assert _cli(args) == 0
    out = capsys.readouterr().out
    assert "final checkpoint:" in out and "evaluation (" in out
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in lines] == [(1, 1), (2, 1), (3, 1)]
    for m in SURROGATES + BLACK_BOX:
        assert f"val/asr/{m}" in lines[1] and f"val/esr/{m}" in lines[2]
    # Stage 3 trains R alone: the protector is stage 2's, the restorer moved.
    s2 = state_tensors(find_latest_checkpoint(run / "stage2", stage=2, complete=True))
    s3 = state_tensors(find_latest_checkpoint(run / "stage3", stage=3, complete=True))
    prot = [k for k in s2 if k.startswith("models:protector.")]
    assert prot and all(torch.equal(s2[k], s3[k]) for k in prot)
    rest = [k for k in s2 if k.startswith("models:restorer.") and k.endswith("weight")]
    assert any(not torch.equal(s2[k], s3[k]) for k in rest)
    report = json.loads((run / "evaluation.json").read_text())
    metrics = report["metrics"]
    for m in SURROGATES + BLACK_BOX:
        for key in ("asr", "asr@jpeg", "esr", "esr@jpeg", "idr", "asr_clean", "asr_attr_only"):
            assert 0.0 <= metrics[f"{key}/{m}"] <= 1.0
    assert 0.0 <= metrics["attr/clf_protected_edited"] <= 1.0
    assert metrics["attr/clf_clean_all"] > 0.5  # the separate classifier reads clean attributes
    assert report["n_images"] == 12  # 6 source identities x 2 test images
    assert (run / "records.parquet").is_file()
    trial_id = _check_in_process_mlflow_records(run, lines, metrics)
    assert f"(trial run {trial_id})" in out  # the console names the trial run
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert "'train/" not in out and '"train/' not in out  # a quiet console: tables, not metric dictionaries


def _check_in_process_mlflow_records(run: Path, lines: list[dict], test_metrics: dict) -> str:
    """The in-process runner records like the Ray one: a trial run + a child per stage, per-epoch metrics, artifacts.

    Returns the trial run's id.
    """
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(run / 'mlflow.db').resolve()}"  # the default: never ./mlruns
    assert not (run / "mlflow.json").exists()  # no pointer file between the run and its evaluation
    client = MlflowClient(tracking_uri=uri)
    trials = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'all'")
    assert len(trials) == 1
    parent = trials[0]
    assert "mlflow.parentRunId" not in parent.data.tags  # a plain `train` is a trial without a sweep
    assert parent.info.status == "FINISHED" and parent.data.params["attack.method"] == "meta_auxiliary"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_stage = {int(c.data.tags["stage"]): c for c in children}
    assert sorted(by_stage) == [1, 2, 3] and all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["runner"] == "in-process" for c in children)
    for stage, child in by_stage.items():
        reported = [x for x in lines if x["stage"] == stage]
        history = client.get_metric_history(child.info.run_id, "global_step")
        assert [(m.step, m.value) for m in history] == [(x["epoch"], x["global_step"]) for x in reported]
        key = "train/G/L_total" if stage == 1 else "train/L_era"
        logged = client.get_metric_history(child.info.run_id, key)
        assert [m.value for m in logged] == pytest.approx([x[key] for x in reported], rel=1e-6)
        paths = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "checkpoint" in paths and ("grids" in paths) == (stage > 1)
        assert any(a.path.endswith("state.json") for a in client.list_artifacts(child.info.run_id, "checkpoint"))
    m = SURROGATES[0]
    logged = client.get_run(parent.info.run_id).data.metrics
    assert logged[f"test/asr/{m}"] == pytest.approx(test_metrics[f"asr/{m}"])
    assert logged[f"test/asr_at_jpeg/{m}"] == pytest.approx(test_metrics[f"asr@jpeg/{m}"])  # '@' is not an MLflow char
    assert {"evaluation.json", "records.parquet"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    return parent.info.run_id


@pytest.mark.parametrize("method", ["ensemble", "first_order"])
def test_stage2_runs_with_the_ablation_attacks(stage1_final: Path, tmp_path: Path, method: str):
    cfg = tiny_config(f"attack.method={method}", "stage2.epochs=1")
    result = run_stage(cfg, 2, in_process_context(tmp_path, 2, progress=False, max_steps_per_epoch=1),
                       inputs=stage1_final)
    t = state_tensors(result.final_checkpoint)
    assert not torch.equal(t["models:protector.perturbation_encoder.enc_layers.0.layers.0.weight"],
                           t["models:generator.enc_layers.0.layers.0.weight"])
    assert all(f"val/asr/{m}" in result.history[-1] for m in SURROGATES + BLACK_BOX)


def test_stage1_wgan_gp_option_adds_the_gradient_penalty(zoo, tmp_path: Path):
    cfg = tiny_config("stage1.gan_loss=wgan_gp", "stage1.epochs=1")
    result = run_stage(cfg, 1, in_process_context(tmp_path, 1, progress=False, max_steps_per_epoch=1))
    assert result.history[-1]["train/D/L_gp"] >= 0.0
    assert "train/G/L_total" in result.history[-1]


def test_parameter_fingerprint_sees_every_parameter_and_ignores_buffers():
    from torch import nn

    from erasablemask.experiments.curriculum.context import parameter_fingerprint

    torch.manual_seed(0)
    a = {"g": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))}
    torch.manual_seed(0)
    b = {"g": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))}
    assert parameter_fingerprint(a) == parameter_fingerprint(b)
    b["g"][1].running_mean += 1.0  # BatchNorm statistics differ across DDP ranks legitimately
    assert parameter_fingerprint(a) == parameter_fingerprint(b)
    with torch.no_grad():
        b["g"][0].bias[1] += 1e-7  # one parameter, one value, a tiny step
    assert parameter_fingerprint(a) != parameter_fingerprint(b)
