"""Hooks between a curriculum stage and whatever runs it (in-process or Ray Train).

The training logic of the three stages (``experiments/curriculum/stage1.py`` ...) is
written once; it talks to its runner only through a :class:`StageContext`:

- ``wrap_model``: in-process the identity; Ray wraps the trained modules in DDP.
- ``make_sampler(dataset, shuffle)``: in-process ``None`` (the stage then uses
  a seeded per-epoch permutation); Ray returns a ``DistributedSampler``.
- ``report(metrics, checkpoint_dir)``: called once per epoch on every rank,
  with the epoch's metrics and the checkpoint directory written by rank 0
  (``None`` on other ranks). In-process: one JSON line in ``metrics.jsonl``
  and the checkpoint kept (older ones pruned to ``keep``); Ray: ``ray.train.report``.
- ``latest_checkpoint``: resume from this checkpoint directory (same stage).
- ``fault_hook(stage, global_step)``: called before every optimisation step;
  tests (and the Ray runner's fault injection) make it raise.
- ``checkpoint_root``: where rank 0 writes the checkpoint directories it
  reports (in-process: ``run_dir/stage<k>/checkpoints``; Ray: a scratch dir,
  since ``ray.train.report`` copies it to storage).

Nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from erasablemask.experiments.devices import resolve_device

__all__ = ["StageContext", "StageResult", "JsonlReporter", "in_process_context", "parameter_fingerprint"]


def _identity(module: nn.Module) -> nn.Module:
    return module


def _no_sampler(dataset: Dataset, shuffle: bool) -> Sampler | None:
    return None


def _noop_fault(stage: int, global_step: int) -> None:
    return None


def _drop_report(metrics: dict, checkpoint_dir: Path | None) -> None:
    return None


def _no_replica_check(fingerprint: str) -> None:
    return None


@dataclass
class StageContext:
    """How one stage runs: rank, device and the runner's hooks (module docstring).

    Attributes:
        rank: this worker's rank (0 writes checkpoints).
        world_size: number of workers.
        device: torch device of this worker.
        wrap_model: ``module -> module`` (Ray: DDP) for every trained module.
        make_sampler: ``(dataset, shuffle) -> Sampler | None``.
        report: ``(metrics, checkpoint_dir | None) -> None``, once per epoch.
        latest_checkpoint: checkpoint directory of this stage to resume from.
        fault_hook: ``(stage, global_step) -> None``; may raise.
        checkpoint_root: folder where rank 0 writes checkpoint directories.
        progress: show a tqdm bar per epoch (rank 0 only).
        max_steps_per_epoch: cut every epoch after this many steps (tests and
            benchmarks; ``None``: the whole data set).
        check_replicas: ``(parameter fingerprint) -> None``, called on every
            rank at each epoch's end before the checkpoint is written; Ray
            compares the ranks' fingerprints and raises if data-parallel
            replicas diverged (a diverged epoch is never checkpointed).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: resolve_device("auto", announce=False))
    wrap_model: Callable[[nn.Module], nn.Module] = _identity
    make_sampler: Callable[[Dataset, bool], Sampler | None] = _no_sampler
    report: Callable[[dict, Path | None], None] = _drop_report
    latest_checkpoint: Path | None = None
    fault_hook: Callable[[int, int], None] = _noop_fault
    checkpoint_root: Path | None = None
    progress: bool = True
    max_steps_per_epoch: int | None = None
    check_replicas: Callable[[str], None] = _no_replica_check

    def checkpoint_dir_root(self) -> Path:
        """``checkpoint_root``, or a fresh temporary folder if none was given."""
        if self.checkpoint_root is None:
            self.checkpoint_root = Path(tempfile.mkdtemp(prefix="erasablemask-ckpt-"))
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        return self.checkpoint_root


@dataclass
class StageResult:
    """One finished stage, whatever ran it (the in-process loop or a Ray Train worker group).

    Returned by :func:`erasablemask.experiments.curriculum.loop.run_stage` and by
    both runners' ``run_stage`` (``platform/runners/``); the pipeline chains
    ``final_checkpoint`` into the next stage.

    Attributes:
        stage: 1, 2 or 3.
        final_checkpoint: the last checkpoint directory written, on this
            machine (rank 0; the Ray runner copies it out of Ray's storage);
            the input of the next stage. ``None`` on other ranks.
        history: the per-epoch metric dicts, in order (resumed epochs included,
            read back from the checkpoint).
        global_step: optimisation steps taken in this stage in total.
        wall_s: seconds this call took (a Ray stage: worker start-up and the
            final copy included).
    """

    stage: int
    final_checkpoint: Path | None
    history: list[dict[str, Any]]
    global_step: int
    wall_s: float = 0.0


def parameter_fingerprint(modules: dict[str, nn.Module]) -> str:
    """sha256 over every parameter's name, shape and bytes (not buffers), modules in name order.

    Buffers are left out on purpose: DDP broadcasts them from rank 0 at the
    start of each forward, and a training-mode forward then updates BatchNorm
    running statistics locally, so they legitimately differ across ranks
    after the last step; parameters must not.
    """
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, p in modules[name].named_parameters():
            h.update(f"{name}.{key}{tuple(p.shape)}".encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class JsonlReporter:
    """In-process ``report``: JSON lines in ``metrics_path``, checkpoints kept (``keep`` newest).

    Each line holds the epoch's metrics, ``extra`` and ``time/reported_unix``
    (when the line was written).

    Args:
        metrics_path: the JSON lines file (appended to; one object per epoch).
        keep: how many checkpoint directories to keep per stage (older ones
            are deleted; 0 keeps all).
        extra: fields added to every line (e.g. ``{"run": "..."}``).
    """

    def __init__(self, metrics_path: Path, *, keep: int = 2, extra: dict | None = None) -> None:
        self.metrics_path = Path(metrics_path)
        self.keep = keep
        self.extra = dict(extra or {})
        self.kept: dict[int, list[Path]] = {}

    def __call__(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        # Wall clock when the epoch's report (and checkpoint) is done: intervals between these
        # are the throughput a user sees, checkpointing included (benchmarks/ray_overhead.py).
        line = {**self.extra, **metrics, "time/reported_unix": time.time()}
        if checkpoint_dir is not None:
            line["checkpoint"] = str(checkpoint_dir)
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if checkpoint_dir is not None:
            stage = metrics.get("stage", 0)  # 1-3, or a competitor's name (competitor_stages.py)
            kept = self.kept.setdefault(stage, [])
            kept.append(Path(checkpoint_dir))
            while self.keep and len(kept) > self.keep:
                shutil.rmtree(kept.pop(0), ignore_errors=True)


def in_process_context(
    run_dir: Path,
    stage: int,
    *,
    keep: int = 2,
    latest_checkpoint: Path | None = None,
    fault_hook: Callable[[int, int], None] = _noop_fault,
    progress: bool = True,
    device: torch.device | str = "auto",
    max_steps_per_epoch: int | None = None,
) -> StageContext:
    """The single-process context: metrics to ``run_dir/metrics.jsonl``, checkpoints under ``run_dir/stage<k>/``."""
    run_dir = Path(run_dir)
    return StageContext(
        device=resolve_device(device) if isinstance(device, str) else device,
        report=JsonlReporter(run_dir / "metrics.jsonl", keep=keep),
        latest_checkpoint=latest_checkpoint,
        fault_hook=fault_hook,
        checkpoint_root=run_dir / f"stage{stage}" / "checkpoints",
        progress=progress,
        max_steps_per_epoch=max_steps_per_epoch,
    )
