"""Run one curriculum stage in this process (no Ray): for one machine and for debugging.

The sibling of :mod:`erasablemask.platform.runners.ray_train`, with the same
``run_stage`` signature and the same :class:`StageResult`; the pipeline
(``platform/pipeline.py``) chains stages with either. It calls the one
training loop, :func:`erasablemask.experiments.curriculum.loop.run_stage`, with
the in-process context: a progress bar per epoch, ``run_dir/metrics.jsonl``,
checkpoints under ``run_dir/stage<k>/checkpoints`` (``compute.num_to_keep``
newest kept) and, when tracked, each epoch's metrics in the stage's MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.context import StageResult, in_process_context
from erasablemask.experiments.curriculum.loop import run_stage as run_stage_loop
from erasablemask.platform.tracking import RunRef

__all__ = ["run_stage"]


def run_stage(
    cfg: ErasableMaskConfig,
    stage: int | str,
    *,
    run_dir: Path,
    inputs: Path | None = None,
    resume: Path | None = None,
    tracking: RunRef | None = None,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    params: dict | None = None,
) -> StageResult:
    """Train ``stage`` here, from ``inputs`` (stages 2, 3), resuming from ``resume`` if given.

    Args:
        cfg: validated config.
        stage: 1, 2, 3, or a competitor's generator (``"advfaces"``, ``"gmaa"``;
            experiments/curriculum/competitor_stages.py).
        run_dir: ``metrics.jsonl`` and ``stage<k>/checkpoints`` go here.
        inputs: the previous stage's final checkpoint (stages 2, 3).
        resume: a checkpoint of this stage to continue from (exact: the run ends
            where an uninterrupted one ends).
        tracking: the stage's MLflow run; each epoch's metrics are logged to it
            at step = epoch. ``None``: not tracked.
        progress: a progress bar per epoch.
        max_steps_per_epoch: cut epochs short (tests, benchmarks).
        params: a competitor stage's hyper-parameters (the attack's fields).

    Returns:
        The stage's :class:`StageResult` (final checkpoint under ``run_dir``).
    """
    ctx = in_process_context(Path(run_dir), stage, keep=cfg.compute.num_to_keep, latest_checkpoint=resume,
                             progress=progress, max_steps_per_epoch=max_steps_per_epoch, device=cfg.compute.device)
    if tracking is not None:
        write_jsonl = ctx.report

        def report(metrics: dict, checkpoint_dir: Path | None) -> None:
            write_jsonl(metrics, checkpoint_dir)
            tracking.log_metrics(metrics, step=int(metrics.get("epoch", 0)))

        ctx.report = report
    return run_stage_loop(cfg, stage, ctx, inputs=inputs if stage != 1 else None, params=params)
