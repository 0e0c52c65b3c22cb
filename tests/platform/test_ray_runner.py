"""The Ray Train path: same weights as in-process, recovery from a worker failure, MLflow, the caller's Ray, a quiet console."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _curriculum_tiny import strip_times
from safetensors.torch import load_file

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.loop import run_stage
from erasablemask.platform.pipeline import run_pipeline
from erasablemask.platform.ray_session import RayNotRunning

# The demo config, shrunk: a tiny world and tiny nets, stage 1 only, two epochs.
TINY = [
    "data.image_size=64",
    "data.miniworld.n_identities=6",
    "data.miniworld.images_per_identity=8",
    "data.miniworld.heldout_identities=2",
    "model.enc_dim=8", "model.dec_dim=8", "model.dis_dim=8", "model.dis_fc_dim=16",
    "model.enc_layers=3", "model.dec_layers=3", "model.dis_layers=3",
    "stage1.epochs=2", "stage1.batch_size=4",
    "compute.cpus_per_worker=1",
]


def _weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(ckpt_dir.glob("*.safetensors")):
        out.update({f"{f.stem}/{k}": v for k, v in load_file(f).items()})
    assert out, f"no safetensors in {ckpt_dir}"
    return out


def _ray_processes() -> set[str]:
    out = subprocess.run(["pgrep", "-f", "gcs_server|raylet"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.mark.slow
def test_stage_on_ray_recovers_from_a_worker_failure_with_the_weights_of_an_uninterrupted_run(
    tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    from erasablemask.platform.ray_session import ray_session

    before = _ray_processes()
    faulty = load_config("miniworld_demo", TINY + [
        "compute.fault_injection.stage=1", "compute.fault_injection.step=8",  # epoch 2 of 2: resumes from epoch 1's checkpoint
        f"tracking.tracking_uri={mlflow_server}", "tracking.experiment_name=ray-runner-test",
    ])
    with ray_session(cfg=faulty):
        result = run_pipeline(faulty, run_dir=tmp_path / "ray", stages=(1,), runner="ray")
    assert (tmp_path / "ray" / ".fault-stage1-fired").is_file(), "the fault was never injected"

    torch.set_num_threads(1)
    clean = load_config("miniworld_demo", TINY)
    ref = run_stage(clean, 1, in_process_context(tmp_path / "inproc", 1, progress=False))

    ray_w, ref_w = _weights(result.final_checkpoint), _weights(ref.final_checkpoint)
    assert ray_w.keys() == ref_w.keys()
    for key in ref_w:
        torch.testing.assert_close(ray_w[key], ref_w[key], rtol=0, atol=0, msg=key)
    # One StageResult whatever the runner: the Ray stage's history is the in-process one (a replayed epoch once).
    ray_stage = result.stages[1]
    assert ray_stage.global_step == ref.global_step
    assert strip_times(ray_stage.history) == strip_times(ref.history)

    # What the trainer reported (rank 0's JSON lines) is what MLflow holds.
    lines = [json.loads(s) for s in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    by_epoch = {line["epoch"]: line for line in lines}  # a replayed epoch overwrites itself
    client = MlflowClient(tracking_uri=mlflow_server)
    child = result.stage_run_ids[1]
    metric = next(k for k in by_epoch[max(by_epoch)] if k.startswith("train/"))
    history = {m.step: m.value for m in client.get_metric_history(child, metric)}
    assert history == pytest.approx({e: line[metric] for e, line in by_epoch.items()})
    assert {a.path for a in client.list_artifacts(child)} >= {"checkpoint"}
    run = client.get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "1"
    assert run.data.tags["mlflow.parentRunId"] == result.trial_run_id
    assert _ray_processes() <= before, "the local Ray instance left processes behind"


def test_ray_runner_refuses_to_run_when_ray_is_not_up(tmp_path: Path) -> None:
    import ray

    from erasablemask.platform.runners import ray_train

    assert not ray.is_initialized()
    cfg = load_config("miniworld_demo", TINY)
    with pytest.raises(RayNotRunning, match="with erasablemask.platform.ray_session.ray_session"):
        ray_train.run_stage(cfg, 1, run_dir=tmp_path / "direct")
    with pytest.raises(RayNotRunning, match="runner='in-process'"):
        run_pipeline(cfg, run_dir=tmp_path / "pipeline", stages=(1,), runner="ray", track=False)
    assert not ray.is_initialized()  # nobody started one behind the caller's back
    assert not (tmp_path / "pipeline" / "config.yaml").exists()  # refused before writing anything


def test_unreachable_tracking_server_fails_before_ray_starts(tmp_path: Path, capsys) -> None:
    import ray

    from erasablemask.platform.cli.main import main

    sets = TINY + ["tracking.tracking_uri=http://127.0.0.1:9"]
    rc = main(["train", "miniworld_demo", *[x for s in sets for x in ("--set", s)], "--stage", "1",
               "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "127.0.0.1:9" in err and "Traceback" not in err  # one line, before any work
    assert not ray.is_initialized()
    assert not (tmp_path / "ray").exists()


@pytest.mark.slow
def test_ray_stage_console_shows_progress_lines_not_metric_dicts_and_the_callers_ray_stays_up(
    tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumes an in-process epoch-1 checkpoint on Ray (epoch 2 only), on a Ray the test started itself."""
    import ray

    from erasablemask.platform.ray_session import RAY_RUNTIME_ENV

    torch.set_num_threads(1)
    cfg = load_config("miniworld_demo", TINY)
    ref = run_stage(cfg, 1, in_process_context(tmp_path / "inproc", 1, progress=False, keep=0))
    epoch1 = tmp_path / "inproc" / "stage1" / "checkpoints" / "stage1_epoch0001"

    shutdowns: list[int] = []
    real_shutdown = ray.shutdown
    ray.init(num_cpus=2, include_dashboard=True, runtime_env=RAY_RUNTIME_ENV, log_to_driver=True)
    monkeypatch.setattr(ray, "shutdown", lambda *a, **k: shutdowns.append(1))
    try:
        capfd.readouterr()
        result = run_pipeline(cfg, run_dir=tmp_path / "ray", stages=(1,), runner="ray", resume=epoch1, track=False)
        assert ray.is_initialized() and shutdowns == [], "the pipeline stopped a Ray it did not start"
        out = ""
        deadline = time.time() + 20  # worker output reaches the driver asynchronously
        while time.time() < deadline and "epoch 2/2: 100%" not in out:
            time.sleep(0.5)
            captured = capfd.readouterr()
            out += captured.out + captured.err
    finally:
        monkeypatch.undo()
        real_shutdown()

    assert "stage 1 epoch 2/2: 100%" in out, out[-3000:]  # the worker's progress line (experiments/progress.py)
    assert "stage 1 epoch 1/2" not in out  # resumed after epoch 1: that epoch was not run again
    assert "stage 1 (ray): 2 epochs, 12 steps" in out  # the pipeline's own line
    for dump in ("'train/", '"train/', "'epoch':", '"epoch":', "Reporting training result", "TrainingReport("):
        assert dump not in out, f"a metric dictionary reached the console ({dump!r}):\n{out[-3000:]}"
    assert strip_times(result.stages[1].history) == strip_times(ref.history)
    assert _weights(result.final_checkpoint).keys() == _weights(ref.final_checkpoint).keys()
    torch.testing.assert_close(_weights(result.final_checkpoint), _weights(ref.final_checkpoint), rtol=0, atol=0)
