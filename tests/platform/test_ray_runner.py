"""The Ray Train path: same weights as in-process, recovery from a worker failure, MLflow, clean shutdown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.curriculum.context import in_process_context
from erasablemask.experiments.curriculum.loop import run_stage

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

    from erasablemask.platform.runners import ray_train as ray_runner

    before = _ray_processes()
    faulty = load_config("miniworld_demo", TINY + [
        "compute.fault_injection.stage=1", "compute.fault_injection.step=8",  # epoch 2 of 2: resumes from epoch 1's checkpoint
        f"tracking.tracking_uri={mlflow_server}", "tracking.experiment_name=ray-runner-test",
    ])
    outcomes = ray_runner.run(faulty, (1,), run_dir=tmp_path / "ray")
    assert (tmp_path / "ray" / ".fault-stage1-fired").is_file(), "the fault was never injected"

    torch.set_num_threads(1)
    clean = load_config("miniworld_demo", TINY)
    result = run_stage(clean, 1, in_process_context(tmp_path / "inproc", 1, progress=False))

    ray_w, ref_w = _weights(outcomes[1].checkpoint), _weights(result.final_checkpoint)
    assert ray_w.keys() == ref_w.keys()
    for key in ref_w:
        torch.testing.assert_close(ray_w[key], ref_w[key], rtol=0, atol=0, msg=key)

    # What the trainer reported (rank 0's JSON lines) is what MLflow holds.
    lines = [json.loads(s) for s in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    by_epoch = {line["epoch"]: line for line in lines}  # a replayed epoch overwrites itself
    client = MlflowClient(tracking_uri=mlflow_server)
    child = outcomes[1].mlflow_run_id
    metric = next(k for k in by_epoch[max(by_epoch)] if k.startswith("train/"))
    history = {m.step: m.value for m in client.get_metric_history(child, metric)}
    assert history == pytest.approx({e: line[metric] for e, line in by_epoch.items()})
    assert {a.path for a in client.list_artifacts(child)} >= {"checkpoint"}
    run = client.get_run(child)
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "1"
    assert _ray_processes() <= before, "the local Ray instance left processes behind"


def test_unreachable_tracking_server_fails_before_ray_starts(tmp_path: Path) -> None:
    import ray

    from erasablemask.platform.runners import ray_train as ray_runner
    from erasablemask.platform.tracking import TrackingUnavailable

    cfg = load_config("miniworld_demo", TINY + ["tracking.tracking_uri=http://127.0.0.1:9"])
    with pytest.raises(TrackingUnavailable, match="127.0.0.1:9"):
        ray_runner.run(cfg, (1,), run_dir=tmp_path)
    assert not ray.is_initialized()
    assert not (tmp_path / "ray").exists()
