"""Run the curriculum's stages on Ray Train V2, tracked in MLflow.

Each stage is one ``TorchTrainer`` whose workers call the same
:func:`erasablemask.experiments.curriculum.run_stage` the in-process runner
calls; this module only supplies a Ray-flavoured
:class:`~erasablemask.experiments.curriculum.context.StageContext` (DDP, a
``DistributedSampler``, ``ray.train.report`` with checkpoints, resume from
``ray.train.get_checkpoint()``, and the tests' fault injection).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.context import JsonlReporter, StageContext
from erasablemask.experiments.curriculum.faults import FaultInjected
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.atomic_files import atomic_dir
from erasablemask.platform.tracking import log_metrics, optional_stage_run, optional_tracker

STAGES = (1, 2, 3)


@dataclass
class StageOutcome:
    """One finished stage: its final checkpoint (local path) and last metrics."""

    stage: int
    checkpoint: Path
    metrics: dict[str, Any]
    wall_s: float
    mlflow_run_id: str | None


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker: build a StageContext and run one stage."""
    import ray.train
    import ray.train.torch
    import torch
    from torch.utils.data import DistributedSampler

    from erasablemask.experiments.curriculum.loop import run_stage

    cfg = ErasableMaskConfig.model_validate(config["cfg"])
    stage = int(config["stage"])
    train_ctx = ray.train.get_context()
    rank, world = train_ctx.get_world_rank(), train_ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.compute.cpus_per_worker)))

    latest = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        latest = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"resume-stage{stage}-")))

    reporter = JsonlReporter(Path(config["run_dir"]) / "metrics.jsonl", keep=0, extra={"runner": "ray"})

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(_scalar_metrics(metrics), checkpoint=ckpt)
        if rank == 0:
            reporter(metrics, None)
            if config.get("mlflow_run_id"):
                step = int(metrics.get("epoch", 0))
                log_metrics(config["tracking_uri"], config["mlflow_run_id"], _scalar_metrics(metrics), step)

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
        progress=rank == 0,
        check_replicas=lambda fingerprint: _check_replicas_in_sync(stage, rank, world, fingerprint),
    )
    inputs = Path(config["inputs"]) if config.get("inputs") else None
    run_stage(cfg, stage, ctx, inputs=inputs)


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


def _ray_init(address: str | None, cfg: ErasableMaskConfig) -> bool:
    """Join ``address`` or start a local instance; returns whether we started it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {"RAY_TRAIN_V2_ENABLED": "1"}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return True
    ray.init(
        num_cpus=max(os.cpu_count() or 1, int(cfg.compute.num_workers * cfg.compute.cpus_per_worker + 0.999)),
        num_gpus=None,
        include_dashboard=True,  # the State API lets finished trainers free their placement groups
        runtime_env=env,
        log_to_driver=True,
    )
    return True


def run_stage_on_ray(
    cfg: ErasableMaskConfig,
    stage: int,
    *,
    run_dir: Path,
    inputs: Path | None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> StageOutcome:
    """Run one stage as a TorchTrainer and return its final checkpoint (copied locally).

    ``run_id``: the stage's MLflow child run (at ``tracking_uri``), to which
    rank 0 logs each epoch's metrics; ``None``: not tracked.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run_dir = Path(run_dir).resolve()
    storage = Path(cfg.compute.storage_path or run_dir / "ray").resolve()
    resources = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"),
            "stage": stage,
            "inputs": str(inputs) if inputs else None,
            "run_dir": str(run_dir),
            "tracking_uri": tracking_uri,
            "mlflow_run_id": run_id,
            "fault_marker": str(run_dir / f".fault-stage{stage}-fired"),
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.compute.num_workers, use_gpu=cfg.compute.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=f"{cfg.digest()}-stage{stage}",
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.compute.num_to_keep),
            failure_config=FailureConfig(max_failures=cfg.compute.max_failures),
        ),
    )
    start = time.perf_counter()
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"stage {stage} failed on Ray: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"stage {stage} reported no checkpoint (0 epochs?)")
    final = run_dir / f"stage{stage}" / "final"
    with atomic_dir(final) as tmp:
        result.checkpoint.to_directory(str(tmp))
    return StageOutcome(stage, final, dict(result.metrics or {}), time.perf_counter() - start, run_id)


def run(
    cfg: ErasableMaskConfig,
    stages: tuple[int, ...] = STAGES,
    *,
    run_dir: Path,
    address: str | None = None,
    inputs: Path | None = None,
    track: bool = True,
) -> dict[int, StageOutcome]:
    """Run ``stages`` in order on Ray Train; each stage feeds the next.

    Args:
        cfg: validated config.
        stages: subset of (1, 2, 3), in order.
        run_dir: where metrics, final checkpoints, Ray storage (default) and
            the sqlite MLflow store (default) go.
        address: an existing Ray cluster to join; ``None`` starts a local
            instance and shuts it down afterwards.
        inputs: the checkpoint directory the first stage starts from (the
            previous stage's final checkpoint) when not starting at stage 1.
        track: record in MLflow (the URI is checked before Ray starts).
    """
    import ray

    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[int, StageOutcome] = {}

    with optional_tracker(cfg, run_dir, track, runner="ray") as tracker:
        started = _ray_init(address, cfg)
        try:
            prev = inputs
            for stage in stages:
                with optional_stage_run(tracker, cfg, stage) as run_id:
                    outcome = run_stage_on_ray(cfg, stage, run_dir=run_dir, inputs=prev,
                                               tracking_uri=tracker.uri if tracker else None, run_id=run_id)
                    if tracker is not None:
                        tracker.log_stage_outputs(cfg, stage, run_id, outcome.checkpoint)
                outcomes[stage] = outcome
                prev = outcome.checkpoint
        finally:
            if started:
                ray.shutdown()
    return outcomes
