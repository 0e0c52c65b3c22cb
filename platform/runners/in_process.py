"""Run the curriculum's stages in this process (no Ray), tracked in MLflow like the Ray path.

The sibling of :mod:`erasablemask.platform.runners.ray_train` for one machine and
for debugging: the same :func:`erasablemask.experiments.curriculum.run_curriculum`
(progress bars, ``metrics.jsonl``, checkpoints under ``run_dir/stage<k>/``),
and the same MLflow records — a parent run per invocation, a child run per
stage with per-epoch metrics, the final checkpoint and (stages 2, 3) the
image grid.
"""

from __future__ import annotations

from pathlib import Path

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.context import StageContext, StageResult, in_process_context
from erasablemask.experiments.curriculum.loop import run_curriculum
from erasablemask.platform.tracking import Tracker, optional_stage_run, optional_tracker

__all__ = ["run"]


def _context(cfg: ErasableMaskConfig, stage: int, run_dir: Path, max_steps_per_epoch: int | None,
             tracker: Tracker | None, run_id: str | None) -> StageContext:
    """The in-process context; with a tracker, each epoch's metrics also go to the stage's child run."""
    ctx = in_process_context(run_dir, stage, keep=cfg.compute.num_to_keep, max_steps_per_epoch=max_steps_per_epoch)
    if tracker is not None and run_id is not None:
        write_jsonl = ctx.report

        def report(metrics: dict, checkpoint_dir: Path | None) -> None:
            write_jsonl(metrics, checkpoint_dir)
            tracker.log_metrics(run_id, metrics, step=int(metrics.get("epoch", 0)))

        ctx.report = report
    return ctx


def run(
    cfg: ErasableMaskConfig,
    stages: tuple[int, ...],
    *,
    run_dir: Path,
    inputs: Path | None = None,
    resume: Path | None = None,
    track: bool = True,
    max_steps_per_epoch: int | None = None,
) -> dict[int, StageResult]:
    """Run ``stages`` in order here; each stage's final checkpoint feeds the next.

    Args:
        cfg: validated config.
        stages: increasing subset of (1, 2, 3).
        run_dir: metrics, checkpoints and the default sqlite MLflow store.
        inputs: the first stage's input checkpoint (default: the newest complete
            checkpoint of the previous stage under ``run_dir``).
        resume: a checkpoint of the first stage to resume from.
        track: record in MLflow (the URI is checked before training starts).
        max_steps_per_epoch: cut epochs short (tests, benchmarks).
    """
    run_dir = Path(run_dir)
    results: dict[int, StageResult] = {}

    with optional_tracker(cfg, run_dir, track, runner="in-process") as tracker:
        prev = inputs
        for n, stage in enumerate(stages):
            with optional_stage_run(tracker, cfg, stage) as run_id:
                result = run_curriculum(
                    cfg, (stage,), run_dir, inputs=prev, resume=resume if n == 0 else None,
                    ctx_factory=lambda s, run_id=run_id: _context(cfg, s, run_dir, max_steps_per_epoch, tracker,
                                                                  run_id),
                ).stages[stage]
                if tracker is not None:
                    tracker.log_stage_outputs(cfg, stage, run_id, result.final_checkpoint)
            results[stage] = result
            prev = result.final_checkpoint
    return results
