"""A real two-node Ray cluster on this machine: the training worker on one node, the FR actors on the other.

Two ``ray start --block`` processes (a head labelled ``trainer_node``, a second
node labelled ``fr_node``, one CPU each, in a private ``--temp-dir``) form the
cluster; a fresh driver process runs stage 1 in-process, then a tiny stage 2
with the Ray runner (``compute.worker_resources={trainer_node: 1}``,
``compute.remote_fr.resources={fr_node: 0.5}``), and reports where every actor
ran. The cluster is then stopped by signalling the two ``ray start`` processes
(their own process groups), not with ``ray stop``, which would stop every Ray
process of this user on the machine (other test sessions' clusters included);
the test asserts that no process of either node's process group is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _curriculum_tiny import BLACK_BOX, SURROGATES

RAY = Path(sys.executable).with_name("ray")
TESTS = Path(__file__).resolve().parents[1]
REMOTE = [f"compute.remote_fr.models=[{','.join(SURROGATES)}]", "compute.remote_fr.cpus_per_actor=0.5",
          "compute.remote_fr.resources={fr_node: 0.5}", "compute.worker_resources={trainer_node: 1}",
          "compute.cpus_per_worker=1", "stage2.epochs=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d.name))
    return pids


def _start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``ray start --block ARGS`` in its own session; returns once the node is up (its log says so)."""
    with log.open("w") as out:
        proc = subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats", *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while "will now block forever" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_node(proc)
            raise RuntimeError(f"`ray start {' '.join(args)}` did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def _stop_node(proc: subprocess.Popen) -> list[int]:
    """SIGTERM the ``ray start --block`` process (it stops its node); the group's survivors after 60 s.

    Survivors are SIGKILLed (by pid) before returning, so a failing test leaves nothing running either.
    """
    pgid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    deadline = time.monotonic() + 60
    while (left := _group_pids(pgid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _driver(address: str, run: str) -> None:
    """The driver process: stage 1 in-process, stage 2 on the cluster; prints one JSON line of placements."""
    import ray
    import torch
    from _curriculum_tiny import tiny_config
    from ray.util.state import list_actors

    from erasablemask.experiments.curriculum.context import in_process_context
    from erasablemask.experiments.curriculum.loop import run_stage
    from erasablemask.experiments.fr_tools.zoo import build_fr_models
    from erasablemask.platform.ray_session import ray_session
    from erasablemask.platform.runners.ray_train import run_stage as ray_run_stage

    torch.set_num_threads(1)
    build_fr_models(tiny_config(), [*SURROGATES, *BLACK_BOX], progress=False)  # the mini zoo, trained once here
    stage1 = run_stage(tiny_config(), 1, in_process_context(Path(run) / "s1", 1, progress=False,
                                                            max_steps_per_epoch=1))
    with ray_session(address=address):
        result = ray_run_stage(tiny_config(*REMOTE), 2, run_dir=Path(run) / "s2", inputs=stage1.final_checkpoint,
                               progress=False, max_steps_per_epoch=1)
        nodes = {n["NodeID"]: sorted(n["Resources"]) for n in ray.nodes() if n["Alive"]}
        actors = [{"class": a.class_name, "node": a.node_id}
                  for a in list_actors(limit=1000, detail=False)]
    print("PLACEMENT " + json.dumps({"nodes": nodes, "actors": actors, "final": str(result.final_checkpoint),
                                     "history": result.history}))


@pytest.mark.slow
def test_a_two_node_cluster_runs_stage2_with_the_worker_and_the_fr_actors_on_their_own_nodes(
    tmp_path: Path,
) -> None:
    if shutil.which(str(RAY)) is None:
        pytest.skip(f"the `ray` command is not installed beside {sys.executable}")
    # Ray 2.60's `ray start` enables token authentication unless told otherwise (README); this cluster runs
    # without it. A short private temp dir: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rayc-", dir="/tmp")
    env = {**os.environ, "ERASABLEMASK_HOME": str(tmp_path / "home"), "RAY_TRAIN_V2_ENABLED": "1",
           "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(_start_node(["--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
                                  "--resources", '{"trainer_node": 1}', "--include-dashboard=true",
                                  f"--dashboard-port={_free_port()}", f"--temp-dir={temp_dir}"],
                                 env, tmp_path / "head.log"))
        nodes.append(_start_node([f"--address={address}", "--num-cpus=1", "--num-gpus=0",
                                  "--resources", '{"fr_node": 1}', f"--temp-dir={temp_dir}"],
                                 env, tmp_path / "fr_node.log"))
        code = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS / 'platform')!r}]; "
                f"from test_remote_fr_cluster import _driver; _driver({address!r}, {str(tmp_path / 'run')!r})")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
    finally:
        left = {p.pid: _stop_node(p) for p in reversed(nodes)}
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not any(left.values()), f"processes left behind by the stopped nodes (pgid: pids): {left}"

    out = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("PLACEMENT "))[len("PLACEMENT "):])
    by_label = {label: [n for n, res in out["nodes"].items() if label in res] for label in ("trainer_node", "fr_node")}
    assert all(len(v) == 1 for v in by_label.values()) and by_label["trainer_node"] != by_label["fr_node"], by_label
    placed = {}
    for a in out["actors"]:
        placed.setdefault(a["class"], set()).add(a["node"])
    assert placed.get("FRActor") == set(by_label["fr_node"]), f"FR actors ran on {placed.get('FRActor')}"
    assert sum(a["class"] == "FRActor" for a in out["actors"]) == len(SURROGATES)
    assert placed.get("RayTrainWorker") == set(by_label["trainer_node"]), placed
    assert [h["epoch"] for h in out["history"]] == [1]
    assert (Path(out["final"]) / "state.json").is_file()


def _alive_fr_actor_pids() -> dict[str, int]:
    from ray.util.state import list_actors

    return {a.actor_id: a.pid for a in list_actors(filters=[("class_name", "=", "FRActor"), ("state", "=", "ALIVE")],
                                                   limit=1000, detail=True)}


@pytest.mark.slow
def test_an_fr_actor_killed_during_a_ray_stage_restarts_and_the_stage_ends_with_the_undisturbed_weights(
    tmp_path: Path,
) -> None:
    """SIGKILL of one surrogate actor's process after stage 2's first epoch, while the second one runs."""
    import threading

    import torch
    from _curriculum_tiny import state_tensors, tiny_config, tiny_zoo
    from ray.util.state import list_actors

    from erasablemask.experiments.curriculum.context import in_process_context
    from erasablemask.experiments.curriculum.loop import run_stage
    from erasablemask.platform.ray_session import ray_session
    from erasablemask.platform.runners.ray_train import run_stage as ray_run_stage

    remote = [*REMOTE[:2], "compute.cpus_per_worker=1", "stage2.epochs=2"]
    with tiny_zoo(tmp_path / "home"):
        torch.set_num_threads(1)
        stage1 = run_stage(tiny_config(), 1, in_process_context(tmp_path / "s1", 1, progress=False,
                                                                max_steps_per_epoch=1)).final_checkpoint
        cfg = tiny_config(*remote)
        with ray_session(cfg=cfg):
            undisturbed = ray_run_stage(cfg, 2, run_dir=tmp_path / "calm", inputs=stage1, progress=False,
                                        max_steps_per_epoch=2)
            run = tmp_path / "killed"
            killed: dict = {}

            def kill_after_first_epoch() -> None:
                metrics = run / "metrics.jsonl"
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    if metrics.is_file() and metrics.read_text().count("\n") >= 1:
                        actor_id, pid = sorted(_alive_fr_actor_pids().items())[0]
                        os.kill(pid, signal.SIGKILL)  # an actor process this test's stage started
                        killed.update(actor=actor_id, pid=pid, epochs_reported=metrics.read_text().count("\n"))
                        return
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
            killer.start()
            disturbed = ray_run_stage(cfg, 2, run_dir=run, inputs=stage1, progress=False, max_steps_per_epoch=2)
            killer.join(timeout=60)
            restarts = {a.actor_id: a.num_restarts
                        for a in list_actors(filters=[("class_name", "=", "FRActor")], limit=1000, detail=True)}
    assert killed, "the FR actor was never killed (no first-epoch report seen)"
    assert killed["epochs_reported"] == 1, f"the kill came after the stage's last epoch: {killed}"
    assert restarts[killed["actor"]] >= 1, f"the killed actor was not restarted: {restarts}"
    assert [h["epoch"] for h in disturbed.history] == [1, 2] and disturbed.global_step == undisturbed.global_step
    calm, after = state_tensors(undisturbed.final_checkpoint), state_tensors(disturbed.final_checkpoint)
    assert sorted(calm) == sorted(after)
    different = [k for k in calm if not torch.equal(calm[k], after[k]) and not k.startswith("state:time")]
    assert not different, f"the stage with a killed FR actor ended with other weights: {different[:10]}"
