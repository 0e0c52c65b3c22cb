"""Run one curriculum stage on Ray Train V2, on whatever Ray this process is connected to.

``run_stage`` builds one ``TorchTrainer`` whose workers call the same
:func:`erasablemask.experiments.curriculum.loop.run_stage` the in-process
runner calls; this module only supplies a Ray-flavoured
:class:`~erasablemask.experiments.curriculum.context.StageContext` (DDP, a
``DistributedSampler``, ``ray.train.report`` with checkpoints, resume from
``ray.train.get_checkpoint()`` or a given checkpoint, and the tests' fault
injection). It neither starts nor stops Ray (:mod:`erasablemask.platform.ray_session`:
the caller owns the Ray lifecycle) and chains no stages (``platform/pipeline.py``).

Console: Ray Train's INFO logs (one "Reporting training result ..." line
with the whole metric dictionary per epoch and worker, checkpoint paths,
worker-group start-up) are turned off with ``RunConfig(logging_config=
LoggingConfig(log_level="WARNING"))`` and, for the one logger that setting
misses in Ray 2.60, :func:`_quiet_report_log`; warnings and errors still
show, and so do the workers' own progress lines (``experiments/progress.py``),
which Ray forwards to the driver.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import load_checkpoint, read_checkpoint_meta
from erasablemask.experiments.curriculum.competitor_stages import check_stage_kind
from erasablemask.experiments.curriculum.context import JsonlReporter, StageContext, StageResult
from erasablemask.experiments.curriculum.faults import FaultInjected
from erasablemask.experiments.curriculum.reruns import trim_metrics
from erasablemask.experiments.fr_tools.zoo import fr_model_provider
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.atomic_files import atomic_dir
from erasablemask.platform.fr_actors import start_fr_actors_for_config
from erasablemask.platform.ray_session import require_ray
from erasablemask.platform.tracking import RunRef

__all__ = ["QUIET_TRAIN_LOGS", "run_stage", "train_loop_per_worker"]

# Ray Train's own log level on the console (ray.train loggers only; Ray core and the workers' output unaffected).
QUIET_TRAIN_LOGS = "WARNING"


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fault_hook(cfg: ErasableMaskConfig, stage: int, marker: Path):
    """Fail once at the configured (stage, step); the marker file survives worker restarts."""
    fi = cfg.compute.fault_injection

    def hook(s: int, global_step: int) -> None:
        if fi.stage == s == stage and global_step == fi.step and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"fault injected at stage {s}, step {global_step}\n")
            raise FaultInjected(f"fault injected at stage {s}, step {global_step} (compute.fault_injection)")

    return hook


def _quiet_report_log() -> None:
    """Drop Ray Train's per-report INFO line ("Reporting training result N: TrainingReport(... metrics={...})").

    ``LoggingConfig(log_level=...)`` filters the ``ray.train.*`` loggers, but in
    Ray 2.60 this one line comes from a logger named by its file path
    (``logging.getLogger(__file__)`` in ``ray/train/v2/_internal/execution/context.py``),
    so the filter misses it and the worker's root logger prints every metric
    dictionary. Raising that one logger to :data:`QUIET_TRAIN_LOGS` keeps its
    warnings and errors.
    """
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: nothing to quiet here (tests/platform/test_ray_runner.py checks)
        return
    logging.getLogger(train_context.__file__).setLevel(QUIET_TRAIN_LOGS)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: build a StageContext and run one stage."""
    import ray.train
    import ray.train.torch
    import torch
    from torch.utils.data import DistributedSampler

    _quiet_report_log()
    from erasablemask.experiments.curriculum.loop import run_stage as run_stage_loop

    cfg = ErasableMaskConfig.model_validate(config["cfg"])
    stage = check_stage_kind(config["stage"])
    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.compute.cpus_per_worker)))

    # A restarted worker group resumes from Ray's latest checkpoint of this stage; a fresh one from `resume`.
    latest = Path(config["resume"]) if config.get("resume") else None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        latest = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"resume-stage{stage}-")))
        if rank == 0:  # epochs after the checkpoint are trained again: log them once
            trim_metrics(Path(config["run_dir"]), stage, int(read_checkpoint_meta(latest)["epoch"]))

    reporter = JsonlReporter(Path(config["run_dir"]) / "metrics.jsonl", keep=0, extra={"runner": "ray"})
    tracking: RunRef | None = config.get("tracking")

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(_scalar_metrics(metrics), checkpoint=ckpt)
        if rank == 0:
            reporter(metrics, None)
            if tracking is not None:
                tracking.log_metrics(_scalar_metrics(metrics), step=int(metrics.get("epoch", 0)))

    def make_sampler(dataset, shuffle: bool):
        if world == 1:
            return None
        return DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=derive_seed(cfg.seed, "sampler", stage)
        )

    ctx = StageContext(
        rank=rank,
        world_size=world,
        device=ray.train.torch.get_device(),
        wrap_model=lambda m: ray.train.torch.prepare_model(m, move_to_device=True),
        make_sampler=make_sampler,
        report=report,
        latest_checkpoint=latest,
        fault_hook=_fault_hook(cfg, stage, Path(config["fault_marker"])),
        checkpoint_root=Path(tempfile.mkdtemp(prefix=f"ckpt-stage{stage}-rank{rank}-")),
        progress=bool(config.get("progress", True)) and rank == 0,
        max_steps_per_epoch=config.get("max_steps_per_epoch"),
        check_replicas=lambda fingerprint: _check_replicas_in_sync(stage, rank, world, fingerprint),
    )
    inputs = Path(config["inputs"]) if config.get("inputs") else None
    actors = config.get("fr_actors")  # compute.remote_fr: these FR models come from the driver's actors
    with fr_model_provider(actors.provider) if actors is not None else contextlib.nullcontext():
        run_stage_loop(cfg, stage, ctx, inputs=inputs, params=config.get("params"))


def _check_replicas_in_sync(stage: int, rank: int, world: int, fingerprint: str) -> None:
    """Fail the epoch if the data-parallel replicas' parameters differ (DDP must keep them identical).

    Called by ``run_stage`` at every epoch's end before the checkpoint is
    reported, so a diverged state is never checkpointed (and a restart from
    the previous checkpoint fails the same way instead of hiding it).
    """
    import torch.distributed as dist

    prints: list[str | None] = [None] * world
    dist.all_gather_object(prints, fingerprint)
    if len(set(prints)) > 1:
        raise RuntimeError(
            f"stage {stage}: the {world} data-parallel replicas ended with different parameters "
            f"(fingerprints {[p[:12] for p in prints]}; this is rank {rank}); a trained module is "
            "updated outside DDP. Run with compute.num_workers=1 and report the config"
        )


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
    callbacks: Sequence[Any] = (),
    params: dict | None = None,
) -> StageResult:
    """Run ``stage`` as a Ray Train V2 ``TorchTrainer`` on the Ray this process is connected to.

    Workers, GPUs, CPUs and custom resources per worker (``compute.worker_resources``,
    e.g. a node label) come from ``compute.*``; Ray's storage
    is ``compute.storage_path`` (default ``run_dir/ray``); a worker failure
    resumes from the latest reported checkpoint (``compute.max_failures``).

    Args:
        cfg: validated config.
        stage: 1, 2, 3, or a competitor's generator (``"advfaces"``, ``"gmaa"``).
        run_dir: rank 0's ``metrics.jsonl``, the fault marker, Ray's default
            storage, and ``stage<k>/final`` (the final checkpoint copied here).
        inputs: the previous stage's final checkpoint (stages 2, 3); a path the
            workers can read (shared storage on a multi-node cluster).
        resume: a checkpoint of this stage to start from (same caveat).
        tracking: the stage's MLflow run; rank 0 logs each epoch's metrics to it.
        progress: rank 0 prints a progress line per epoch (Ray forwards it).
        max_steps_per_epoch: cut epochs short (tests, benchmarks).
        params: a competitor stage's hyper-parameters (the attack's fields).
        callbacks: Ray Train ``UserCallback`` s for the trainer's ``RunConfig``
            (a sweep's trial forwards each epoch's report to Ray Tune with one).

    Returns:
        :class:`StageResult`; ``history`` and ``global_step`` are read back
        from the final checkpoint's training state (replayed epochs after a
        failure appear once), ``wall_s`` includes the worker group's start-up.

    Raises:
        RayNotRunning: this process is not connected to Ray.
        RuntimeError: the stage failed on Ray, or reported no checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    require_ray()
    start = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = Path(cfg.compute.storage_path or run_dir / "ray").resolve()
    resources = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = 1
    resources.update(cfg.compute.worker_resources)  # custom node labels, e.g. {"trainer_node": 1}
    # compute.remote_fr: FR actors for the whole stage (they outlive a restarted worker group); stage 1 has no FR.
    actors = start_fr_actors_for_config(cfg) if stage != 1 and cfg.compute.remote_fr.models else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "stage": stage,
            "inputs": str(Path(inputs).resolve()) if inputs and stage != 1 else None,
            "params": params,
            "resume": str(Path(resume).resolve()) if resume else None,
            "run_dir": str(run_dir),
            "tracking": tracking,
            "fault_marker": str(run_dir / f".fault-stage{stage}-fired"),
            "progress": progress,
            "max_steps_per_epoch": max_steps_per_epoch,
            "fr_actors": actors,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.compute.num_workers, use_gpu=cfg.compute.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"{cfg.digest()}-stage{stage}",
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.compute.num_to_keep),
            failure_config=FailureConfig(max_failures=cfg.compute.max_failures),
            logging_config=LoggingConfig(log_level=QUIET_TRAIN_LOGS),
            callbacks=list(callbacks) or None,
        ),
    )
    try:
        result = trainer.fit()
    finally:
        if actors is not None:
            actors.shutdown()
    if result.error is not None:
        raise RuntimeError(f"stage {stage} failed on Ray: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage} reported no checkpoint (0 epochs?)")
    final = run_dir / f"stage{stage}" / "final"
    with atomic_dir(final) as tmp:
        result.checkpoint.to_directory(str(tmp))
    state = load_checkpoint(final, cfg, stage=stage, purpose="input")
    return StageResult(stage=stage, final_checkpoint=final, history=list(state.state["history"]),
                       global_step=state.global_step, wall_s=time.perf_counter() - start)
