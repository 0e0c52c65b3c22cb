"""What a ``train`` into a run folder that already holds work does: resume it, refuse, or start over (explicitly).

A run folder (``--run-dir``) holds ``metrics.jsonl``, ``config.yaml`` and,
per stage, checkpoints: in-process ones under ``stage<k>/checkpoints``, the
Ray runner's final copy ``stage<k>/final`` and Ray Train's own storage
(``compute.storage_path``, default ``<run_dir>/ray``, one folder per stage
named ``<config digest>-stage<k>``). :func:`plan_reruns` looks at them before
anything trains (reading only the checkpoints' ``state.json`` metadata) and
decides, per stage:

- **resume** from the newest checkpoint of the stage when its config fits
  (:func:`~erasablemask.experiments.curriculum.checkpoint.resume_mismatches`:
  every key that determines the stage's weights is equal; more epochs may be
  asked for) — a finished stage is not trained again;
- **fresh** when the folder holds nothing of the stage (or ``overwrite``);
- **refuse** (:class:`RunDirConflict`) when the newest checkpoint of a stage
  does not fit, naming the differing keys and the choice: ``--overwrite``
  (discard the folder's work), another ``--run-dir``, or the folder's own
  config with ``--resume``.

``metrics.jsonl`` never mixes two runs: before a stage trains from epoch
``e`` (0 when fresh), :func:`trim_metrics` drops its lines of that stage
after epoch ``e`` (epochs about to be trained again), and ``overwrite``
deletes the folder's work first (:func:`discard_run_dir`; the MLflow store
``mlflow.db`` is kept: it records runs, it is not a run).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import (
    find_latest_checkpoint,
    read_checkpoint_meta,
    resume_mismatches,
)
from erasablemask.models.atomic_files import write_text_atomic

__all__ = [
    "RunDirConflict",
    "StagePlan",
    "RerunPlan",
    "checkpoint_roots",
    "newest_checkpoint",
    "holds_work",
    "plan_reruns",
    "trim_metrics",
    "discard_run_dir",
    "METRICS",
]

METRICS = "metrics.jsonl"
# What --overwrite deletes from a run folder (besides the stages' folders and Ray's storage of this config).
_RUN_FILES = (METRICS, "config.yaml", "evaluation.json", "records.parquet", "protection_grid.png")


class RunDirConflict(ValueError):
    """The run folder holds work that the current config cannot continue; the message names the choice."""


@dataclass
class StagePlan:
    """What happens to one stage: ``resume`` from a checkpoint (``epoch`` epochs done) or train from scratch."""

    stage: int
    resume: Path | None = None
    epoch: int = 0
    epochs: int = 0
    complete: bool = False  # the checkpoint is the stage's final one for this config: nothing to train


@dataclass
class RerunPlan:
    """:func:`plan_reruns`' answer: one :class:`StagePlan` per requested stage."""

    run_dir: Path
    stages: dict[int, StagePlan] = field(default_factory=dict)
    held_work: bool = False
    overwrite: bool = False

    def line(self) -> str | None:
        """One line for the console when the folder held work (``None`` otherwise)."""
        if self.overwrite and self.held_work:
            return f"--overwrite: discarded the earlier work in {self.run_dir}; training from scratch"
        parts = []
        for s, p in self.stages.items():
            if p.complete:
                parts.append(f"stage {s} finished ({p.resume})")
            elif p.resume is not None:
                parts.append(f"stage {s} from epoch {p.epoch}/{p.epochs} ({p.resume})")
        if not parts:
            return None
        return f"resuming {self.run_dir}: " + "; ".join(parts)


def _stage_epochs(cfg: ErasableMaskConfig, stage: int) -> int:
    return {1: cfg.stage1.epochs, 2: cfg.stage2.epochs, 3: cfg.stage3.epochs}[stage]


def checkpoint_roots(cfg: ErasableMaskConfig, run_dir: Path, stage: int) -> list[Path]:
    """Folders where stage ``stage``'s checkpoints of this run can be: ``stage<k>/`` and Ray's storage."""
    storage = Path(cfg.compute.storage_path or Path(run_dir) / "ray")
    return [Path(run_dir) / f"stage{stage}", storage / f"{cfg.digest()}-stage{stage}"]


def newest_checkpoint(cfg: ErasableMaskConfig, run_dir: Path, stage: int, complete: bool = False) -> Path | None:
    """The checkpoint of ``stage`` with the most steps in any of :func:`checkpoint_roots`, or None."""
    best: tuple[int, Path] | None = None
    for root in checkpoint_roots(cfg, run_dir, stage):
        found = find_latest_checkpoint(root, stage=stage, complete=complete)
        if found is not None:
            step = int(read_checkpoint_meta(found)["global_step"])
            if best is None or step > best[0]:
                best = (step, found)
    return best[1] if best else None


def holds_work(cfg: ErasableMaskConfig, run_dir: Path) -> bool:
    """True when ``run_dir`` has metric lines or a checkpoint of any stage."""
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS
    if metrics.is_file() and metrics.stat().st_size > 0:
        return True
    return any(newest_checkpoint(cfg, run_dir, s) is not None for s in (1, 2, 3))


def _choice(run_dir: Path) -> str:
    return (
        f"pass --overwrite to discard that work, another --run-dir to keep it, or resume it with its own "
        f"config (`erasablemask train {run_dir / 'config.yaml'} --run-dir {run_dir} --resume`)"
    )


def plan_reruns(
    cfg: ErasableMaskConfig,
    run_dir: Path,
    stages: Sequence[int],
    *,
    resume: Path | str | None = None,
    overwrite: bool = False,
) -> RerunPlan:
    """Decide, per stage, whether to resume or start from scratch (module docstring); nothing is changed.

    Args:
        cfg: the resolved config.
        run_dir: the run folder.
        stages: the increasing stages to run.
        resume: ``None`` (resume what fits, else start fresh), ``"latest"``
            (``--resume`` without a path: there must be a checkpoint of the
            first stage to resume) or a checkpoint directory of the first stage.
        overwrite: discard the folder's work (every stage starts fresh).

    Raises:
        RunDirConflict: a stage's newest checkpoint does not fit ``cfg``
            (names the keys and the choice); ``overwrite`` together with
            ``resume``; ``"latest"`` with nothing to resume.
        CheckpointMismatch, FileNotFoundError: an explicit ``resume`` that is
            not a checkpoint of the first stage fitting ``cfg``.
    """
    run_dir = Path(run_dir)
    stages = list(stages)
    if overwrite and resume is not None:
        raise RunDirConflict("--overwrite and --resume contradict each other: choose one")
    plan = RerunPlan(run_dir=run_dir, held_work=holds_work(cfg, run_dir), overwrite=overwrite)
    for n, stage in enumerate(stages):
        epochs = _stage_epochs(cfg, stage)
        if overwrite:
            plan.stages[stage] = StagePlan(stage, epochs=epochs)
            continue
        if n == 0 and resume not in (None, "latest"):
            found = Path(resume)
            explicit = True
        else:
            found = newest_checkpoint(cfg, run_dir, stage)
            explicit = False
            if n == 0 and resume == "latest" and found is None:
                raise RunDirConflict(
                    f"--resume: '{run_dir}' holds no stage-{stage} checkpoint to resume; "
                    f"leave out --resume to start stage {stage}, or pass --resume CKPT"
                )
        if found is None:
            plan.stages[stage] = StagePlan(stage, epochs=epochs)
            continue
        meta = read_checkpoint_meta(found)
        if meta.get("stage") != stage:
            raise RunDirConflict(
                f"--resume {found}: a stage-{meta['stage']} checkpoint, but stage {stage} is "
                f"the first to run; pass a stage-{stage} checkpoint or change --stage"
            )
        bad = resume_mismatches(meta, cfg, stage, purpose="resume")
        if int(meta["epoch"]) > epochs:
            bad.append(f"stage{stage}.epochs: checkpoint has {meta['epoch']} done, config asks {epochs}")
        if bad:
            head = (
                f"--resume {found} does not fit the config"
                if explicit
                else f"run dir '{run_dir}' already holds stage-{stage} work of another config ({found})"
            )
            raise RunDirConflict(f"{head}; differing keys: " + "; ".join(bad) + f". {_choice(run_dir)}")
        plan.stages[stage] = StagePlan(
            stage,
            resume=found,
            epoch=int(meta["epoch"]),
            epochs=epochs,
            complete=bool(meta.get("complete")) and int(meta["epoch"]) == epochs,
        )
    return plan


def trim_metrics(run_dir: Path, stage: int | str, after_epoch: int) -> int:
    """Drop ``run_dir/metrics.jsonl``'s lines of ``stage`` after epoch ``after_epoch`` (rewritten atomically).

    Called before a stage trains from epoch ``after_epoch``, so epochs trained
    again are logged once. Unparsable lines (a line cut by a crash) are dropped too.

    Returns:
        How many lines were dropped.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            line = None  # cut by a crash
        stale = not isinstance(line, dict) or (
            line.get("stage") == stage and isinstance(line.get("epoch"), int) and line["epoch"] > after_epoch
        )
        if stale:
            dropped += 1
        else:
            kept.append(raw)
    if dropped:
        write_text_atomic(path, "".join(f"{x}\n" for x in kept))
    return dropped


def discard_run_dir(cfg: ErasableMaskConfig, run_dir: Path) -> None:
    """``--overwrite``: delete the run folder's work (stage folders, Ray storage of this config, metrics, results).

    Only the names a run writes are deleted; ``mlflow.db`` (the default
    tracking store, which records runs) and anything else stay.
    """
    run_dir = Path(run_dir)
    for stage in (1, 2, 3):
        for root in checkpoint_roots(cfg, run_dir, stage):
            shutil.rmtree(root, ignore_errors=True)
        (run_dir / f".fault-stage{stage}-fired").unlink(missing_ok=True)
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
