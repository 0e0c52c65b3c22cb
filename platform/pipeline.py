"""One reproduction from a resolved config: stages (by either runner) -> evaluation -> records -> tracking.

:func:`run_pipeline` is what ``erasablemask train``, ``erasablemask demo`` and a
Ray Tune trial call. In order, it

1. checks everything that can fail early (:func:`preflight`: stages, input
   checkpoints (intact, fitting), ``--evaluate`` without a stage-2/3
   checkpoint, a run folder holding work of another config, the tracking
   URI; with the Ray runner, that this process is connected to Ray) and
   plans what a run folder that already holds work becomes: each stage
   resumes from its newest fitting checkpoint, a finished one is not trained
   again (:mod:`erasablemask.experiments.curriculum.reruns`; ``overwrite``
   discards the folder's work first);
2. writes the resolved config to ``<run_dir>/config.yaml``;
3. opens the trial's MLflow run (a child of ``parent_run_id``, a sweep's run,
   when given) and, per stage, a child run tagged with the stage;
4. runs the stages in order with the chosen runner's ``run_stage`` — the one
   place where stages are chained: stage k+1 starts from stage k's final
   checkpoint (the first stage from ``inputs``, or the newest complete
   checkpoint of the previous stage under ``run_dir``);
5. optionally evaluates the final checkpoint on the test split and writes
   ``evaluation.json``, ``records.parquet`` (one row per protected image x FR
   model x transform) and ``protection_grid.png`` to ``run_dir``, logging the
   three files, the ``test/<metric>`` summaries, the headline means
   (``asr.black_box_mean``, ...) and the ``targets`` tag to the trial run.

The caller owns the Ray lifecycle (:mod:`erasablemask.platform.ray_session`):
the pipeline never starts or stops Ray, so it runs unchanged inside a Tune
trial. It prints one line per stage and for the evaluation (``progress``);
tables are the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from erasablemask.experiments.config.loading import dump_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import (
    CheckpointMismatch,
    find_latest_checkpoint,
    load_checkpoint,
    read_checkpoint_meta,
    resume_mismatches,
    verify_checkpoint,
)
from erasablemask.experiments.curriculum.context import StageResult
from erasablemask.experiments.curriculum.reruns import RerunPlan, discard_run_dir, plan_reruns, trim_metrics
from erasablemask.models.atomic_files import write_text_atomic
from erasablemask.platform.evaluation_run import EVALUATION_JSON, PROTECTION_GRID, RECORDS_PARQUET
from erasablemask.platform.tracking import (
    Tracker,
    check_tracking_uri,
    optional_stage_run,
    optional_tracker,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from erasablemask.experiments.evaluation.evaluate import EvaluationReport

__all__ = ["RUNNERS", "Runner", "PipelineResult", "preflight", "run_pipeline"]

Runner = Literal["ray", "in-process"]
RUNNERS: tuple[str, ...] = ("ray", "in-process")


@dataclass
class PipelineResult:
    """What one :func:`run_pipeline` call produced.

    Attributes:
        run_dir: the run folder (absolute).
        stages: stage -> its :class:`StageResult`, in the order run.
        final_checkpoint: the last stage's final checkpoint.
        evaluation: the test-split evaluation of ``final_checkpoint``, or
            ``None`` without ``evaluate``.
        tracking_uri: where the MLflow runs are (``None``: not tracked).
        trial_run_id: the trial's MLflow run (``None``: not tracked).
        stage_run_ids: stage -> its MLflow child run (empty when not tracked).
    """

    run_dir: Path
    stages: dict[int, StageResult]
    final_checkpoint: Path
    evaluation: EvaluationReport | None = None
    tracking_uri: str | None = None
    trial_run_id: str | None = None
    stage_run_ids: dict[int, str] = field(default_factory=dict)

    @property
    def evaluation_json(self) -> Path:
        """``<run_dir>/evaluation.json`` (written only with ``evaluate``)."""
        return self.run_dir / EVALUATION_JSON

    @property
    def records_path(self) -> Path:
        """``<run_dir>/records.parquet`` (written only with ``evaluate``)."""
        return self.run_dir / RECORDS_PARQUET

    @property
    def grid_path(self) -> Path:
        """``<run_dir>/protection_grid.png`` (written only with ``evaluate``)."""
        return self.run_dir / PROTECTION_GRID


def preflight(
    cfg: ErasableMaskConfig,
    *,
    run_dir: Path,
    stages: Sequence[int],
    runner: str,
    inputs: Path | None = None,
    resume: Path | str | None = None,
    evaluate: bool = False,
    track: bool = True,
    overwrite: bool = False,
) -> RerunPlan:
    """Fail before any training (and before a caller starts Ray) on inputs that cannot work.

    Also decides what a run folder that already holds work becomes
    (:func:`~erasablemask.experiments.curriculum.reruns.plan_reruns`: resume
    what fits the config, refuse what does not) and verifies the integrity of
    every checkpoint the run will read (the first stage's input, the
    checkpoints to resume from).

    Returns:
        The :class:`RerunPlan` (nothing is changed on disk).

    Raises:
        ValueError: stages not an increasing subset of 1, 2, 3; an unknown
            runner; ``evaluate`` when the last stage is 1; no input for the
            first stage; remote FR models (``compute.remote_fr``) without the Ray runner.
        RunDirConflict: the run folder holds work of another config (names the choice).
        CheckpointMismatch: ``inputs`` / ``resume`` does not fit the config.
        IntegrityError: a checkpoint to read is damaged (names the file).
        FileNotFoundError: ``inputs`` / ``resume`` is not a checkpoint directory.
        TrackingUnavailable: ``track`` and the tracking URI is a file store or unreachable.
    """
    stages = list(stages)
    if not stages or any(s not in (1, 2, 3) for s in stages) or stages != sorted(set(stages)):
        raise ValueError(f"stages must be increasing values from 1, 2, 3; got {stages}")
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}: use one of {list(RUNNERS)}")
    if evaluate and stages[-1] < 2:
        raise ValueError("evaluation needs a stage-2 or stage-3 checkpoint; include stage 2 or 3 (--stage)")
    if runner != "ray" and cfg.compute.remote_fr.models and stages[-1] > 1:
        raise ValueError(f"compute.remote_fr.models={list(cfg.compute.remote_fr.models)} are served by Ray actors, "
                         f"which only the Ray runner starts; drop --in-process, or set compute.remote_fr.models=[]")
    for flag, path in (("--inputs", inputs), ("--resume", None if resume == "latest" else resume)):
        if path is not None and not (Path(path) / "state.json").is_file():
            raise FileNotFoundError(f"{flag} {path}: not a checkpoint directory (no state.json)")
    plan = plan_reruns(cfg, Path(run_dir), stages, resume=resume, overwrite=overwrite)
    if stages[0] > 1:
        _check_input(cfg, _stage_input(Path(run_dir), stages[0], Path(inputs) if inputs else None), stages[0])
    for sp in plan.stages.values():
        if sp.resume is not None:
            verify_checkpoint(sp.resume)
    if track:
        check_tracking_uri(resolve_tracking_uri(cfg, Path(run_dir)))
    return plan


def _check_input(cfg: ErasableMaskConfig, path: Path, stage: int) -> None:
    """The first stage's input checkpoint, checked before training: intact, the previous stage's final one, fitting."""
    verify_checkpoint(path)
    meta = read_checkpoint_meta(path)
    if meta.get("stage") != stage - 1 or not meta.get("complete"):
        raise CheckpointMismatch(f"input checkpoint '{path}' is stage {meta.get('stage')} after epoch "
                                 f"{meta.get('epoch')}; stage {stage} needs stage {stage - 1}'s final checkpoint")
    bad = resume_mismatches(meta, cfg, stage - 1, purpose="input")
    if bad:
        raise CheckpointMismatch(f"input checkpoint '{path}' was written with another config; differing keys: "
                                 + "; ".join(bad) + "; use the config it was trained with, or train "
                                 f"stage {stage - 1} again")


def _stage_input(run_dir: Path, stage: int, previous: Path | None) -> Path | None:
    """Stage ``stage``'s input: ``previous`` (the chain), else the newest complete previous-stage checkpoint."""
    if stage == 1:
        return None
    if previous is not None:
        return previous
    found = find_latest_checkpoint(run_dir / f"stage{stage - 1}", stage=stage - 1, complete=True)
    if found is None:
        raise ValueError(
            f"stage {stage} needs stage {stage - 1}'s final checkpoint and none was found under "
            f"'{run_dir / f'stage{stage - 1}'}'; run stage {stage - 1} first or pass --inputs DIR"
        )
    return found


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)


def run_pipeline(
    cfg: ErasableMaskConfig,
    *,
    run_dir: Path,
    stages: Sequence[int] = (1, 2, 3),
    runner: Runner = "ray",
    inputs: Path | None = None,
    resume: Path | str | None = None,
    evaluate: bool = False,
    track: bool = True,
    overwrite: bool = False,
    parent_run_id: str | None = None,
    continue_run_id: str | None = None,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    train_callbacks: Sequence[Any] = (),
) -> PipelineResult:
    """Run a reproduction (module docstring): stages, then the optional evaluation, tracked.

    Args:
        cfg: the resolved, validated config.
        run_dir: output folder (created): ``config.yaml``, ``metrics.jsonl``,
            ``stage<k>/`` checkpoints, the evaluation files, and the default
            sqlite MLflow store.
        stages: an increasing subset of (1, 2, 3).
        runner: ``"ray"`` (Ray Train, on the Ray this process is connected
            to) or ``"in-process"``.
        inputs: the first stage's input checkpoint (stages 2, 3); default:
            the newest complete checkpoint of the previous stage under ``run_dir``.
        resume: a checkpoint of the first stage to continue from; ``"latest"``:
            the newest one in ``run_dir`` (refused when there is none). Without
            it, a run folder that already holds work of this config is resumed
            anyway, stage by stage (finished stages are not trained again), and
            one of another config is refused (:mod:`~erasablemask.experiments.curriculum.reruns`).
        overwrite: discard the run folder's earlier work first (``mlflow.db`` is kept).
        evaluate: evaluate the final checkpoint on the test split.
        track: record the trial in MLflow.
        parent_run_id: the sweep's MLflow run; the trial becomes its child.
        continue_run_id: the MLflow trial run of an earlier attempt on this run folder to continue
            instead of opening a new one (a sweep's restarted trial: the trial stays one run, its
            resumed stage continues its stage run; :meth:`~erasablemask.platform.tracking.Tracker.open`).
        progress: progress bars / lines while training and evaluating.
        max_steps_per_epoch: cut epochs short (tests, benchmarks).
        train_callbacks: Ray Train callbacks of every stage's trainer (the Ray
            runner only; a sweep's trial forwards the epochs' reports to Tune).

    Returns:
        :class:`PipelineResult`.

    Raises:
        RayNotRunning: ``runner="ray"`` and this process is not connected to Ray.
        ValueError, FileNotFoundError, TrackingUnavailable: :func:`preflight`.
    """
    run_dir = Path(run_dir).resolve()
    stages = tuple(stages)
    plan = preflight(cfg, run_dir=run_dir, stages=stages, runner=runner, inputs=inputs, resume=resume,
                     evaluate=evaluate, track=track, overwrite=overwrite)
    if runner == "ray":
        from erasablemask.platform.ray_session import require_ray
        from erasablemask.platform.runners import ray_train as runner_module

        require_ray()
    else:
        from erasablemask.platform.runners import in_process as runner_module
    if overwrite:
        discard_run_dir(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", dump_config(cfg))
    _say(progress and plan.line() is not None, plan.line() or "")

    results: dict[int, StageResult] = {}
    stage_run_ids: dict[int, str] = {}
    with optional_tracker(cfg, run_dir, track, runner=runner, parent_run_id=parent_run_id,
                          continue_run_id=continue_run_id) as tracker:
        previous = Path(inputs) if inputs is not None else None
        for stage in stages:
            stage_input = _stage_input(run_dir, stage, previous)
            sp = plan.stages[stage]
            if sp.complete:  # finished in an earlier invocation with this config: nothing to train
                done = load_checkpoint(sp.resume, cfg, stage=stage, purpose="input")
                results[stage] = StageResult(stage=stage, final_checkpoint=sp.resume, global_step=done.global_step,
                                             history=list(done.state["history"]))
                previous = sp.resume
                _say(progress, f"stage {stage}: already finished in {run_dir} -> {sp.resume}")
                continue
            trim_metrics(run_dir, stage, sp.epoch)  # epochs trained again are logged once
            with optional_stage_run(tracker, cfg, stage) as stage_run:
                _say(progress, f"stage {stage} ({runner}): training" + (f" from {stage_input}" if stage_input else ""))
                result = runner_module.run_stage(
                    cfg, stage, run_dir=run_dir, inputs=stage_input, resume=sp.resume,
                    tracking=stage_run, progress=progress, max_steps_per_epoch=max_steps_per_epoch,
                    **({"callbacks": train_callbacks} if train_callbacks else {}),
                )
                if tracker is not None and stage_run is not None:
                    stage_run_ids[stage] = stage_run.run_id
                    tracker.log_stage_outputs(cfg, stage, stage_run.run_id, result.final_checkpoint)
            _say(progress, f"stage {stage} ({runner}): {len(result.history)} epochs, {result.global_step} steps, "
                           f"{result.wall_s:.0f} s -> {result.final_checkpoint}")
            results[stage] = result
            previous = result.final_checkpoint
        final = results[stages[-1]].final_checkpoint
        report = _evaluate(cfg, final, run_dir, tracker, progress) if evaluate else None
    return PipelineResult(
        run_dir=run_dir, stages=results, final_checkpoint=final, evaluation=report,
        tracking_uri=tracker.uri if tracker else None, trial_run_id=tracker.trial_run_id if tracker else None,
        stage_run_ids=stage_run_ids,
    )


def _evaluate(cfg: ErasableMaskConfig, checkpoint: Path, run_dir: Path, tracker: Tracker | None,
              progress: bool) -> EvaluationReport:
    """Evaluate ``checkpoint`` on the test split; write and log evaluation.json, records.parquet, the grid.

    The records' ``run`` column is the trial's MLflow run id when tracked,
    else the run folder's name.
    """
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
    from erasablemask.platform.evaluation_run import evaluate_and_write

    _say(progress, f"evaluation: test split, checkpoint {checkpoint}")
    run = tracker.trial_run_id if tracker is not None else run_dir.name
    protection = ErasableMaskProtection.from_checkpoint(cfg, checkpoint)  # on compute.device
    # The same code as `erasablemask evaluate` (platform/evaluation_run.py).
    report, files = evaluate_and_write(cfg, protection, run_dir, run=run, stage=protection.stage,
                                       checkpoint=protection.checkpoint, split="test",
                                       discriminator=protection.discriminator, progress=progress)
    if tracker is not None:
        tracker.log_evaluation(report.metrics, files.all(), targets=report.targets)
    return report
