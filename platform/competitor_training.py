"""Train a generator-based competitor (AdvFaces, GMAA) with a curriculum runner, tracked in MLflow.

The competitors' generators are stage kinds of the one training loop
(``experiments/curriculum/competitor_stages.py``), so either runner trains them
exactly as it trains ErasableMask's stages: the in-process runner, or a Ray Train
worker group (DDP over ``compute.num_workers``, checkpoints reported to Ray,
restarts from the latest one, ``compute.fault_injection``). Tracked, the training is
an MLflow trial run (tag ``method=<name>``) with one child run for the stage
(tag ``stage=<name>``): the config and the competitor's hyper-parameters as params
(``<name>.<field>``), each epoch's metrics, and the final checkpoint as an artifact.
The attack is then built from that checkpoint:
``build(name, surrogates, checkpoint=result.final_checkpoint)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.competitor_stages import (
    COMPETITOR_STAGES,
    competitor_trainer_class,
)
from erasablemask.experiments.curriculum.context import StageResult
from erasablemask.platform.tracking import RunRef, optional_stage_run, optional_tracker

__all__ = ["CompetitorTraining", "train_competitor"]


@dataclass(frozen=True)
class CompetitorTraining:
    """A finished competitor training: the stage's result and its MLflow runs (None when not tracked)."""

    result: StageResult
    params: dict[str, Any]
    trial_run_id: str | None
    stage_run_id: str | None


def train_competitor(
    cfg: ErasableMaskConfig,
    name: str,
    params: dict[str, Any] | None = None,
    *,
    run_dir: Path,
    runner: Literal["ray", "in-process"] = "in-process",
    inputs: Path | None = None,
    resume: Path | None = None,
    track: bool = True,
    parent_run_id: str | None = None,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
) -> CompetitorTraining:
    """Train competitor ``name``'s generator on ``cfg``'s data, surrogates and targets.

    Args:
        cfg: the resolved config (``attack.surrogates``, ``attack.target``, ``data``, ``compute``).
        name: ``"advfaces"`` or ``"gmaa"``.
        params: the competitor's hyper-parameters (its attack class's fields; defaults: official code).
        run_dir: ``metrics.jsonl``, ``stage<name>/`` checkpoints and the default MLflow store.
        runner: ``"in-process"`` or ``"ray"`` (Ray Train, on the Ray this process is connected to).
        inputs: GMAA's AttGAN teacher: a complete stage-1 checkpoint.
        resume: a checkpoint of this competitor stage to continue from (exactly).
        track: record the training in MLflow.
        parent_run_id: nest the trial under this run (e.g. a ``compare`` parent).
        progress: progress bars.
        max_steps_per_epoch: cut epochs short (tests, benchmarks).

    Raises:
        LookupError: ``name`` is not a generator-based competitor.
        ValueError: an unknown hyper-parameter (before anything starts).
    """
    if name not in COMPETITOR_STAGES:
        raise LookupError(f"'{name}' is not a trained competitor; choose one of {sorted(COMPETITOR_STAGES)}")
    resolved = competitor_trainer_class(name).attack_class.resolve_params(dict(params or {}))
    if runner == "ray":
        from erasablemask.platform.runners import ray_train as runner_module
    elif runner == "in-process":
        from erasablemask.platform.runners import in_process as runner_module
    else:
        raise ValueError(f"runner must be 'ray' or 'in-process'; got {runner!r}")
    run_dir = Path(run_dir)
    with optional_tracker(cfg, run_dir, track, runner=runner, parent_run_id=parent_run_id) as tracker:
        if tracker is not None:
            tracker.client.set_tag(tracker.trial_run_id, "method", name)
        with optional_stage_run(tracker, cfg, name) as ref:  # type: ignore[arg-type]  # a competitor stage kind
            ref: RunRef | None
            if tracker is not None and ref is not None:
                tracker.client.set_tag(ref.run_id, "method", name)
                tracker.log_params(ref.run_id, {f"{name}.{k}": v for k, v in resolved.items()})
            result = runner_module.run_stage(
                cfg,
                name,
                run_dir=run_dir,
                inputs=inputs,
                resume=resume,
                tracking=ref,
                progress=progress,
                max_steps_per_epoch=max_steps_per_epoch,
                params=resolved,
            )
            if tracker is not None and ref is not None and result.final_checkpoint is not None:
                tracker.log_artifacts(ref.run_id, Path(result.final_checkpoint), "checkpoint")
        return CompetitorTraining(
            result=result,
            params=resolved,
            trial_run_id=tracker.trial_run_id if tracker else None,
            stage_run_id=ref.run_id if ref else None,
        )
