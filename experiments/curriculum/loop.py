"""The three-stage curriculum (§IV-D), one stage at a time, with checkpoints and exact resume.

:func:`run_stage` is the one training loop; the in-process CLI and the Ray
runner both call it with their own :class:`StageContext`. The per-stage
work (what one optimisation step does, what is validated) lives in
``stage1.py`` / ``stage2.py`` / ``stage3.py`` as a :class:`StageTrainer`.

Determinism: model initialisation is seeded from ``(cfg.seed, "init", stage)``
(the same on every rank); Python/numpy/torch global RNGs and the trainer's
own ``torch.Generator`` objects from ``(cfg.seed, purpose, stage, rank)``; the
data order of epoch ``e`` from ``(cfg.seed, "order", stage, e)`` (or the
runner's sampler with ``set_epoch(e)``). A checkpoint at the end of an epoch
stores weights, optimiser states, every RNG state and the trainer's own state
(adaptive weights, metric history), so a run resumed from it takes exactly
the steps an uninterrupted run takes (bitwise on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import (
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from erasablemask.experiments.curriculum.competitor_stages import (
    check_stage_kind,
    competitor_epochs,
    competitor_trainer_class,
    is_competitor_stage,
)
from erasablemask.experiments.curriculum.context import (
    StageContext,
    StageResult,
    parameter_fingerprint,
)
from erasablemask.experiments.devices import to_memory_format
from erasablemask.experiments.progress import progress_bar
from erasablemask.experiments.seeding import derive_seed, seed_everything

__all__ = ["StageTrainer", "run_stage", "stage_epochs", "build_trainer", "checkpoint_name"]


class StageTrainer(Protocol):
    """What a stage supplies to :func:`run_stage`."""

    stage: int
    dataset: Dataset
    batch_size: int
    modules: dict[str, nn.Module]  # saved in checkpoints (unwrapped modules)
    optimizers: dict[str, torch.optim.Optimizer]
    generators: dict[str, torch.Generator]  # RNGs the steps draw from (saved)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]: ...

    def end_epoch(self, epoch: int) -> dict[str, float]: ...

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


def stage_epochs(cfg: ErasableMaskConfig, stage: int | str, params: dict[str, Any] | None = None) -> int:
    """Epochs of ``stage`` from the config (paper: 200 / 100 / 50); a competitor's from ``params``."""
    if is_competitor_stage(stage):
        return competitor_epochs(stage, params)
    return {1: cfg.stage1.epochs, 2: cfg.stage2.epochs, 3: cfg.stage3.epochs}[stage]


def checkpoint_name(stage: int, epoch: int) -> str:
    """Directory name of the checkpoint after ``epoch`` epochs of ``stage``."""
    return f"stage{stage}_epoch{epoch:04d}"


def build_trainer(cfg: ErasableMaskConfig, stage: int | str, ctx: StageContext, inputs: Path | None,
                  params: dict[str, Any] | None = None) -> StageTrainer:
    """The stage's trainer, its models initialised (stage 1) or loaded from ``inputs`` (stages 2, 3).

    A competitor's stage kind (``competitor_stages.py``) gets its trainer with ``params`` and the
    optional ``inputs`` (GMAA's AttGAN teacher: a stage-1 checkpoint).
    """
    if is_competitor_stage(stage):
        return competitor_trainer_class(stage)(cfg, ctx, params or {}, inputs)
    if stage == 1:
        from erasablemask.experiments.curriculum.stage1 import Stage1Trainer

        return Stage1Trainer(cfg, ctx)
    if inputs is None:
        raise ValueError(
            f"stage {stage} starts from stage {stage - 1}'s final checkpoint: pass inputs=DIR "
            f"(CLI: run stage {stage - 1} first in the same --run-dir, or give --inputs DIR)"
        )
    prev = load_checkpoint(inputs, cfg, stage=stage - 1, purpose="input")
    if stage == 2:
        from erasablemask.experiments.curriculum.stage2 import Stage2Trainer

        return Stage2Trainer(cfg, ctx, prev)
    from erasablemask.experiments.curriculum.stage3 import Stage3Trainer

    return Stage3Trainer(cfg, ctx, prev)


def _batches(trainer: StageTrainer, ctx: StageContext, cfg: ErasableMaskConfig, stage: int, epoch: int
             ) -> DataLoader:
    sampler = ctx.make_sampler(trainer.dataset, True)
    if sampler is None:
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "order", stage, epoch))
        sampler = torch.randperm(len(trainer.dataset), generator=gen).tolist()
    elif hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    c = cfg.compute
    pin = c.pin_memory == "on" or (c.pin_memory == "auto" and ctx.device.type == "cuda")
    return DataLoader(trainer.dataset, batch_size=trainer.batch_size, sampler=sampler, drop_last=True,
                      num_workers=c.data_workers, pin_memory=pin, persistent_workers=False)


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for d in logs for k in d):  # every key (GMAA logs G terms every g_freq-th step)
        vals = [d[key] for d in logs if key in d]
        out[f"train/{key}"] = float(sum(vals) / len(vals))
    return out


def run_stage(cfg: ErasableMaskConfig, stage: int | str, ctx: StageContext, *, inputs: Path | None = None,
              params: dict[str, Any] | None = None) -> StageResult:
    """Train one stage for ``stage<k>.epochs`` epochs (resuming from ``ctx.latest_checkpoint`` if set).

    Args:
        cfg: validated config.
        stage: 1, 2, 3, or a competitor's generator (``"advfaces"``, ``"gmaa"``: competitor_stages.py).
        ctx: the runner's hooks (:class:`StageContext`).
        inputs: the previous stage's final checkpoint directory (stages 2, 3).
        params: a competitor stage's hyper-parameters (the attack's fields; ignored by stages 1-3).

    Returns:
        :class:`StageResult` with the final checkpoint (rank 0) and the metric history.

    Raises:
        ValueError: bad stage, missing inputs, or a data set smaller than one batch.
        CheckpointMismatch: ``inputs`` or the resume checkpoint does not fit ``cfg``.
    """
    stage = check_stage_kind(stage)
    started = time.perf_counter()
    epochs = stage_epochs(cfg, stage, params)
    resume = load_checkpoint(ctx.latest_checkpoint, cfg, stage=stage, purpose="resume") if ctx.latest_checkpoint else None
    torch.manual_seed(derive_seed(cfg.seed, "init", stage))  # identical initialisation on every rank
    trainer = build_trainer(cfg, stage, ctx, inputs, params)
    for module in trainer.modules.values():  # compute.channels_last (in place: the optimisers keep their tensors)
        to_memory_format(module, cfg.compute.channels_last)
    per_rank = len(trainer.dataset) // max(ctx.world_size, 1)
    if epochs and per_rank < trainer.batch_size:
        raise ValueError(f"stage {stage}: {per_rank} training images per worker, fewer than one batch of "
                         f"{trainer.batch_size}; lower stage{stage}.batch_size or enlarge data.miniworld")
    seed_everything(derive_seed(cfg.seed, "train", stage, ctx.rank))
    for name, gen in trainer.generators.items():
        gen.manual_seed(derive_seed(cfg.seed, name, stage, ctx.rank))
    history: list[dict[str, Any]] = []
    start_epoch, global_step, final = 0, 0, None
    if resume is not None:
        for name, module in trainer.modules.items():
            resume.load_module(name, module)
        for name, opt in trainer.optimizers.items():
            opt.load_state_dict(resume.state["optimizers"][name])
        restore_rng(resume.state["rng"], trainer.generators)
        trainer.load_extra_state(resume.state["extra"])
        history = list(resume.state["history"])
        start_epoch, global_step, final = resume.epoch, resume.global_step, resume.path
    max_steps = ctx.max_steps_per_epoch
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        loader = _batches(trainer, ctx, cfg, stage, epoch)
        n_steps = len(loader) if max_steps is None else min(len(loader), max_steps)
        bar = progress_bar(total=n_steps, desc=f"stage {stage} epoch {epoch + 1}/{epochs}", unit="step",
                           disable=not (ctx.progress and ctx.rank == 0), leave=True, dynamic_ncols=True)
        logs: list[dict[str, float]] = []
        for i, batch in enumerate(loader):
            if i >= n_steps:
                break
            ctx.fault_hook(stage, global_step)
            if cfg.compute.channels_last:
                batch = {k: to_memory_format(v, True) for k, v in batch.items()}
            logs.append(trainer.train_step(batch))
            global_step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs[-1].items())[:3]}, refresh=False)
        bar.close()
        metrics: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "global_step": global_step}
        metrics.update(_mean_logs(logs))
        metrics.update(trainer.end_epoch(epoch))
        metrics["time/epoch_s"] = time.perf_counter() - t0
        if ctx.world_size > 1:
            ctx.check_replicas(parameter_fingerprint(trainer.modules))
        history.append(metrics)
        last = epoch + 1 == epochs
        path = None
        if ctx.rank == 0 and (last or (epoch + 1) % cfg.compute.checkpoint_every_epochs == 0):
            path = save_checkpoint(
                ctx.checkpoint_dir_root() / checkpoint_name(stage, epoch + 1), cfg=cfg, stage=stage, epoch=epoch + 1,
                global_step=global_step, complete=last, modules=trainer.modules,
                state={"optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
                       "rng": capture_rng(trainer.generators), "history": history, "extra": trainer.extra_state()},
            )
            final = path
        ctx.report(metrics, path)
    return StageResult(stage=stage, final_checkpoint=final if ctx.rank == 0 else None, history=history,
                       global_step=global_step, wall_s=time.perf_counter() - started)
