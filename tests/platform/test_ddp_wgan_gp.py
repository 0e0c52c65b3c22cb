"""Stage 1 with WGAN-GP (a gradient penalty: a double backward through D) under DDP, two gloo processes.

No Ray: two spawned processes build the same StageContext the Ray worker does
(DDP-wrapped modules, a DistributedSampler, the per-epoch replica check) and
run stage 1. The replicas must end with identical parameters; without DDP
the same run must fail the replica check (so the check can fail here).
"""

from __future__ import annotations

import math
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _curriculum_tiny import TINY

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, use_ddp: bool) -> None:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    from erasablemask.experiments.config.loading import load_config
    from erasablemask.experiments.curriculum.context import StageContext
    from erasablemask.experiments.curriculum.loop import run_stage
    from erasablemask.platform.runners.ray_train import _check_replicas_in_sync

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        cfg = load_config("miniworld_demo", [*TINY, "stage1.gan_loss=wgan_gp", "stage1.epochs=1"])
        ctx = StageContext(
            rank=rank,
            world_size=WORLD,
            wrap_model=DistributedDataParallel if use_ddp else (lambda m: m),
            make_sampler=lambda ds, shuffle: DistributedSampler(ds, num_replicas=WORLD, rank=rank, shuffle=shuffle,
                                                                seed=cfg.seed),
            checkpoint_root=Path(out) / f"ckpt{rank}",
            progress=False,
            max_steps_per_epoch=3,
            check_replicas=lambda fp: _check_replicas_in_sync(1, rank, WORLD, fp),
        )
        result = run_stage(cfg, 1, ctx)
        gp = result.history[-1]["train/D/L_gp"]  # the penalty was computed (and is finite)
        (Path(out) / f"rank{rank}.ok").write_text(f"{result.global_step} {math.isfinite(gp)}")
    except Exception:
        (Path(out) / f"rank{rank}.err").write_text(traceback.format_exc())
    # Both ranks end here, in either case (the replica check fails on every rank); tearing gloo down
    # while the other rank still talks to it aborts the process.
    dist.barrier()
    dist.destroy_process_group()


def _run(tmp_path: Path, use_ddp: bool) -> dict[str, str]:
    tmp_path.mkdir(parents=True)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), use_ddp), nprocs=WORLD, join=True)
    return {p.name: p.read_text() for p in sorted(tmp_path.glob("rank*"))}


@pytest.mark.slow
def test_wgan_gp_stage1_keeps_ddp_replicas_identical_and_the_check_catches_unsynced_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path / "home"))  # the spawned ranks inherit it
    synced = _run(tmp_path / "ddp", use_ddp=True)
    assert synced == {"rank0.ok": "3 True", "rank1.ok": "3 True"}, synced

    unsynced = _run(tmp_path / "plain", use_ddp=False)
    assert set(unsynced) == {"rank0.err", "rank1.err"}, unsynced
    assert all("data-parallel replicas ended with different parameters" in e for e in unsynced.values())
