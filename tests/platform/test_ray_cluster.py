"""Joining an existing Ray cluster (`--address`) and data-parallel training with two DDP workers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _curriculum_tiny import TINY

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(tmp_path: Path):
    """A real head node started with `ray start` (2 CPUs); stopped afterwards."""
    if shutil.which(str(RAY)) is None:
        pytest.skip(f"the `ray` command is not installed beside {sys.executable}")
    port = _free_port()
    # Ray 2.60's `ray start` enables token authentication unless told otherwise; a cluster with it
    # needs RAY_AUTH_MODE=token on the driver too (README). This test cluster runs without it.
    env = {**os.environ, "ERASABLEMASK_HOME": str(tmp_path / "home"), "RAY_TRAIN_V2_ENABLED": "1",
           "RAY_AUTH_MODE": "disabled"}
    start = [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
             "--include-dashboard=true", f"--dashboard-port={_free_port()}",
             "--disable-usage-stats"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)


def _cluster_alive(address: str, env: dict) -> bool:
    return subprocess.run([str(RAY), "status", f"--address={address}"], env=env, capture_output=True,
                          timeout=60).returncode == 0


@pytest.mark.slow
def test_two_ddp_workers_on_an_existing_cluster_train_in_sync_and_leave_it_running(
    ray_cluster: tuple[str, dict], tmp_path: Path
) -> None:
    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.data.splits import split_dataset

    address, env = ray_cluster
    sets = [*TINY, "stage1.epochs=1", "stage2.epochs=1", "stage3.epochs=1", "compute.num_workers=2",
            "compute.cpus_per_worker=1"]
    run = tmp_path / "run"
    # The real command line in a fresh driver process, as a user would run it against a cluster.
    cmd = [str(Path(sys.executable).with_name("erasablemask")), "train", "miniworld_demo",
           *[x for s in sets for x in ("--set", s)], "--stage", "all", "--address", address, "--run-dir", str(run),
           "--no-track"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # All three stages passed the replica check at every epoch (parameters identical on both ranks before
    # each checkpoint; it fails without DDP), and each worker saw half of the data per epoch.
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in lines] == [(1, 1), (2, 1), (3, 1)]  # rank 0 reports, once per epoch
    cfg = load_config("miniworld_demo", sets)
    n_train = len(split_dataset(cfg, "train"))
    assert lines[0]["global_step"] == (n_train // 2) // cfg.stage1.batch_size
    assert lines[1]["global_step"] == (n_train // 2) // cfg.stage2.batch_size
    assert lines[2]["global_step"] == (n_train // 2) // cfg.stage3.batch_size
    assert (run / "stage3" / "final" / "state.json").is_file()
    assert not (run / "mlflow.db").exists()  # --no-track
    assert _cluster_alive(address, env), "joining a cluster must not shut it down"
