"""Hyper-parameter sweeps on Ray Tune + Optuna: one trial = one pipeline run, its stages on Ray Train.

``erasablemask sweep SWEEP`` (:mod:`erasablemask.platform.cli.sweep`) reads a
sweep file (:mod:`erasablemask.experiments.config.sweep`, checked before Ray
starts) and calls :func:`run_sweep`, which

1. creates the sweep folder ``<storage>/<name>/`` (``sweep.json``: the sweep
   file, the tracking URI, the parent run) and one MLflow **parent run** (the
   search settings as params);
2. starts a local Ray and a ``ray.tune.Tuner`` over a function trainable,
   :func:`_trial`. Each trial builds its config (the base config, the base
   overrides, its sampled values, its seed), and runs
   :func:`~erasablemask.platform.pipeline.run_pipeline` with the sweep run as
   ``parent_run_id`` (MLflow: sweep -> trial -> stage). The stages run as Ray
   Train V2 ``TorchTrainer`` s inside the trial (Tune over Train is a
   function that builds the trainer: ``Tuner(trainer)`` is gone in V2); a
   Train callback (:class:`_ObjectiveReport`) forwards every epoch's
   validation score of stages 2 and 3 to Tune, which is what ASHA stops on;
   the test-split evaluation at the end gives the trial's objectives;
3. searches with Optuna through ``OptunaSearch``: TPE and ASHA for one
   objective, NSGA-II without early stopping for several (then the Pareto
   front is written to ``pareto.parquet`` and drawn in ``pareto.png``); or
   Tune's grid / random generator (``search.algorithm``);
4. reuses stage 1: trials whose stage-1 config is the same (the usual case:
   λ/β/γ/ε touch stages 2-3 only) share one stage-1 checkpoint in
   ``<storage>/stage1_cache/<key>/``, keyed by the digest of every config
   section stage 1 depends on (``STAGE_SECTIONS[1]``) and the step cap. The
   first trial trains it under a file lock, the others wait for it, and later
   sweeps on the same storage find it. The mini FR zoo is cached the same way
   already (``experiments/fr_tools/mini_zoo.py``, under ``ERASABLEMASK_HOME``);
5. collects every trial's per-sample records into the sweep's parquet
   dataset ``<sweep>/dataset`` (:func:`erasablemask.analysis.collect.collect_run_dirs`)
   and, with ``report: true`` in the file, writes the analysis report
   (Fig. 5 when γ or β vary) to ``<sweep>/report``; ``trials.parquet``
   holds one row per trial (status, sampled values, objectives, MLflow run).

Crash safety: Tune's experiment state is under ``<sweep>/tune``; after the
driver dies, :func:`resume_sweep` (``erasablemask sweep --resume DIR``)
calls ``Tuner.restore``: finished trials are not run again, unfinished ones
start again and resume (:func:`run_trial`). A restarted trial first looks for
its earlier MLflow run (the child of the sweep run whose ``tracking.run_dir``
is the trial's folder): a finished one is reported again instead of
retraining; an unfinished one is continued: the pipeline resumes the trial
folder as a rerun of ``erasablemask train`` does
(:mod:`erasablemask.experiments.curriculum.reruns`: a finished stage is kept,
the interrupted one goes on from its newest checkpoint, its epochs after
that checkpoint logged once) into the same MLflow trial run and stage run, so
every trial is recorded once, with all its epochs. A worker that dies is retried
by Ray Train from the stage's last checkpoint (``compute.max_failures``); a
trial that raises is recorded as failed (Tune errors it, MLflow marks the run
FAILED) and the sweep goes on. A trial that ASHA stops is ended KILLED in
MLflow with the tag ``sweep_outcome=stopped_early``.

CPU arithmetic: a trial is a Tune driver holding :data:`TRIAL_DRIVER_CPU`
CPUs; its one training worker takes ``cpus_per_trial`` (default: the
cluster's CPUs less the drivers', divided by ``max_concurrent``), so
``max_concurrent`` trials and their worker groups fit on the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pandas as pd

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.config.sweep import SweepConfig
from erasablemask.experiments.curriculum.checkpoint import STAGE_SECTIONS
from erasablemask.models.atomic_files import file_lock, write_text_atomic
from erasablemask.platform.tracking import _experiment_id, check_tracking_uri

if TYPE_CHECKING:
    from erasablemask.platform.pipeline import Runner

__all__ = [
    "TRIAL_DRIVER_CPU",
    "SweepResult",
    "pareto_mask",
    "resume_sweep",
    "run_sweep",
    "run_trial",
    "stage1_key",
    "status_lines",
    "sweep_dir",
]

TRIAL_DRIVER_CPU = 0.01  # a trial is a driver (Train's controller takes none); its worker holds the real CPUs
SWEEP_JSON = "sweep.json"
TRIALS_PARQUET = "trials.parquet"
PARETO_PARQUET = "pareto.parquet"
PARETO_PNG = "pareto.png"
STAGE1_CACHE = "stage1_cache"


# ----------------------------------------------------------------------------- folders and keys
def sweep_dir(sweep: SweepConfig) -> Path:
    """``<storage>/<name>`` (absolute)."""
    return (Path(sweep.storage) / sweep.name).resolve()


def stage1_key(cfg: ErasableMaskConfig, max_steps_per_epoch: int | None) -> str:
    """Digest of everything stage 1's weights depend on: the config sections ``STAGE_SECTIONS[1]`` and the step cap.

    Two trials with the same key would train bit-identical stage-1 checkpoints (the stage is seeded).
    """
    tree = cfg.model_dump(mode="json")
    blob = {k: tree[k] for k in STAGE_SECTIONS[1]} | {"max_steps_per_epoch": max_steps_per_epoch}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Stage1:
    checkpoint: Path
    key: str
    trained: bool  # this trial trained it (else: found in the cache)
    wait_s: float  # waiting for the lock (another trial training it)
    train_s: float  # the stage-1 pipeline here (worker-group start-up included); 0 when reused
    epochs_s: float  # its epochs' own time


def ensure_stage1(
    cfg: ErasableMaskConfig, cache_root: Path, *, runner: str, max_steps_per_epoch: int | None, progress: bool
) -> Stage1:
    """The cached stage-1 checkpoint for ``cfg``, trained here (untracked, under a lock) if it is not there yet."""
    from erasablemask.experiments.curriculum.checkpoint import finished_stage_checkpoint
    from erasablemask.platform.pipeline import run_pipeline

    key = stage1_key(cfg, max_steps_per_epoch)
    folder = cache_root / key
    with file_lock(cache_root / f".{key}.lock") as waited:
        done = finished_stage_checkpoint(folder, 1)  # in process: no stage1/final, the newest complete one
        if done is not None:
            return Stage1(done, key, trained=False, wait_s=waited, train_s=0.0, epochs_s=0.0)
        t0 = time.perf_counter()
        cfg = cfg.model_copy(deep=True)
        cfg.compute.storage_path = folder / "ray"  # the cache's own Ray storage, not the first trial's
        result = run_pipeline(
            cfg,
            run_dir=folder,
            stages=(1,),
            runner=runner,
            track=False,
            progress=progress,
            max_steps_per_epoch=max_steps_per_epoch,
        )
        epochs = sum(h.get("time/epoch_s", 0.0) for h in result.stages[1].history)
        return Stage1(
            result.final_checkpoint, key, trained=True, wait_s=waited, train_s=time.perf_counter() - t0, epochs_s=epochs
        )


# ----------------------------------------------------------------------------- Tune side
def _tune_space(sweep: SweepConfig) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = {}
    for key, dist in sweep.space.items():
        if dist.kind == "uniform":
            space[key] = tune.uniform(*dist.uniform)
        elif dist.kind == "loguniform":
            space[key] = tune.loguniform(*dist.loguniform)
        elif dist.kind == "choice":
            space[key] = tune.choice(dist.choice)
        else:
            space[key] = tune.grid_search(dist.grid)
    if sweep.points:  # one grid axis of whole configurations (SweepConfig.trial_values expands the index)
        space["point"] = tune.grid_search(list(range(len(sweep.points))))
    space["seed"] = tune.grid_search(sweep.seeds) if sweep.search.algorithm == "grid" else sweep.seeds[0]
    return space


def _sampler_name(sweep: SweepConfig) -> str:
    if sweep.search.algorithm != "optuna":
        return "none"
    return "NSGAIISampler" if sweep.multi_objective else "TPESampler"


def _search_params(sweep: SweepConfig, cpus_per_trial: float) -> dict[str, str]:
    """The parent run's params: what and how the sweep searches."""
    return {
        "sweep.name": sweep.name,
        "sweep.base": sweep.base,
        "sweep.overrides": json.dumps(sweep.overrides),
        "sweep.space": json.dumps({k: {d.kind: d.probe_values()} for k, d in sweep.space.items()}),
        "sweep.points": json.dumps(sweep.points),
        "sweep.objectives": json.dumps([o.model_dump() for o in sweep.objectives]),
        "sweep.num_samples": str(sweep.num_samples),
        "sweep.max_concurrent": str(sweep.max_concurrent),
        "sweep.seeds": json.dumps(sweep.seeds),
        "sweep.stages": json.dumps(sweep.stages),
        "search.algorithm": sweep.search.algorithm,
        "search.sampler": _sampler_name(sweep),
        "search.scheduler": sweep.search.scheduler,
        "search.grace_period": str(sweep.search.grace_period),
        "search.reduction_factor": str(sweep.search.reduction_factor),
        "search.seed": str(sweep.search.seed),
        "sweep.cpus_per_trial": f"{cpus_per_trial:g}",
        "sweep.max_steps_per_epoch": str(sweep.max_steps_per_epoch),
    }


def _search_alg_and_scheduler(sweep: SweepConfig) -> tuple[Any, Any]:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    search_alg = None
    if sweep.search.algorithm == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        if sweep.multi_objective:
            sampler = optuna.samplers.NSGAIISampler(seed=sweep.search.seed)
            search_alg = OptunaSearch(
                metric=[o.key for o in sweep.objectives], mode=[o.mode for o in sweep.objectives], sampler=sampler
            )
        else:
            sampler = optuna.samplers.TPESampler(seed=sweep.search.seed)
            search_alg = OptunaSearch(sampler=sampler)
    elif sweep.search.algorithm == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=sweep.search.seed)
    if sweep.search.scheduler == "asha":
        epochs = _reports_per_trial(sweep)
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs + 1,
            grace_period=min(sweep.search.grace_period, epochs + 1),
            reduction_factor=sweep.search.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return search_alg, scheduler


def _reports_per_trial(sweep: SweepConfig) -> int:
    """Per-epoch reports a trial makes (stages 2 and 3 of the base config)."""
    cfg = sweep.base_config()
    return sum(getattr(cfg, f"stage{s}").epochs for s in sweep.stages if s > 1)


def _objective_report_callback(objectives: list[tuple[str, str]]) -> Any:
    """A Ray Train callback that forwards each epoch's validation score to Tune (for ASHA).

    ``objectives``: (summary key, Tune key) pairs. Reports without every
    objective (stage 1 has no attack metrics) are not forwarded.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class _ObjectiveReport(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            rank0 = metrics[0]
            values = {tune_key: rank0.get(f"val/{metric}") for metric, tune_key in objectives}
            if any(v is None or not math.isfinite(float(v)) for v in values.values()):
                return
            self._training_actor_item_queue.put(
                {**values, "stage": int(rank0.get("stage", 0)), "epoch": int(rank0.get("epoch", 0)), "phase": "val"}
            )

    return _ObjectiveReport()


def _trial_config(
    sweep: SweepConfig, params: dict[str, Any], ctx: dict[str, Any], trial_dir: Path
) -> ErasableMaskConfig:
    """The trial's config: base + base overrides + sampled values + seed, tracked at the sweep's store."""
    return load_config(
        sweep.base,
        [
            *sweep.trial_overrides(params),
            f"tracking.tracking_uri={ctx['tracking_uri']}",
            f"tracking.experiment_name={ctx['experiment_name']}",
            f"tracking.run_dir={trial_dir}",
            "compute.num_workers=1",
            f"compute.cpus_per_worker={ctx['cpus_per_trial']}",
            f"compute.storage_path={trial_dir / 'ray'}",
        ],
    )


def _children(client: Any, experiment_id: str, parent: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)


def _earlier_runs(client: Any, experiment_id: str, parent: str, trial_dir: Path) -> list[Any]:
    """This trial's runs from an earlier attempt (the sweep's children whose ``tracking.run_dir`` is its folder)."""
    return [
        r for r in _children(client, experiment_id, parent) if r.data.params.get("tracking.run_dir") == str(trial_dir)
    ]


def _forget_run(client: Any, experiment_id: str, run: Any) -> None:
    """Delete an unfinished run of an earlier attempt and its stage runs (the trial is recorded once)."""
    for child in _children(client, experiment_id, run.info.run_id):
        client.delete_run(child.info.run_id)
    client.delete_run(run.info.run_id)


def run_trial(
    sweep: SweepConfig,
    params: dict[str, Any],
    ctx: dict[str, Any],
    trial_id: str,
    *,
    runner: Runner = "ray",
    train_callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """One trial's work in ``<sweep>/trials/<trial_id>``: stage 1 from the cache, the pipeline, the objectives.

    A trial started again (``sweep --resume`` after the driver died, or a retry) continues its earlier
    attempt: one that finished (its MLflow run has the objectives) is reported again without training;
    otherwise the pipeline resumes the trial folder like a rerun of ``erasablemask train``
    (:mod:`erasablemask.experiments.curriculum.reruns`: finished stages are kept, the interrupted one
    continues from its newest checkpoint) and continues the earlier MLflow trial run and its stage run, so
    the trial is one run.

    Args:
        sweep: the sweep.
        params: the trial's sampled values (dotted config keys, ``seed``).
        ctx: the sweep's context (:func:`_sweep_context`, ``sweep.json``).
        trial_id: the Tune trial id (the folder's name).
        runner: the pipeline's runner (a Tune trial: ``"ray"``).
        train_callbacks: Ray Train callbacks of the stages (a Tune trial: :func:`_objective_report_callback`).

    Returns:
        What the trial reports to Tune: the objectives, the timings, ``phase``, ``restored`` (1: reported
        from the finished MLflow run), ``resumed`` (1: continued an unfinished attempt) and ``mlflow_run``.
    """
    from mlflow.tracking import MlflowClient

    from erasablemask.platform.pipeline import run_pipeline

    t_start = time.perf_counter()
    trial_dir = Path(ctx["root"]) / "trials" / trial_id
    cfg = _trial_config(sweep, dict(params), ctx, trial_dir)
    client = MlflowClient(tracking_uri=ctx["tracking_uri"])
    exp, parent = ctx["experiment_id"], ctx["parent_run_id"]
    objectives = [(o.metric, o.key) for o in sweep.objectives]

    earlier = sorted(_earlier_runs(client, exp, parent, trial_dir), key=lambda r: r.info.start_time, reverse=True)
    for run in earlier:
        if run.info.status == "FINISHED" and all(k in run.data.metrics for _, k in objectives):
            # finished before the driver died: report it again, do not retrain
            kept = {k: v for k, v in run.data.metrics.items() if k.startswith("time/") or k == "stage1_trained"}
            return (
                {k: run.data.metrics[k] for _, k in objectives}
                | kept
                | {"phase": "test", "restored": 1, "resumed": 0, "mlflow_run": run.info.run_id}
            )
    continued = earlier[0].info.run_id if earlier else None
    for run in earlier[1:]:  # attempts of a sweep from before trials continued their run: recorded once
        _forget_run(client, exp, run)
    trial_dir.mkdir(parents=True, exist_ok=True)

    stages = tuple(sweep.stages)
    inputs = None
    stage1 = None
    if stages[0] == 1:
        # sweep.reuse_stage1 false: every trial trains its own stage 1 (the benchmark's baseline)
        cache = Path(ctx["stage1_cache"]) if sweep.reuse_stage1 else trial_dir / "own_stage1"
        stage1 = ensure_stage1(cfg, cache, runner=runner, max_steps_per_epoch=sweep.max_steps_per_epoch, progress=False)
        inputs, stages = stage1.checkpoint, stages[1:]
    t_pipeline = time.perf_counter()
    result = run_pipeline(
        cfg,
        run_dir=trial_dir,
        stages=stages,
        runner=runner,
        inputs=inputs,
        evaluate=True,
        parent_run_id=parent,
        continue_run_id=continued,
        progress=False,
        max_steps_per_epoch=sweep.max_steps_per_epoch,
        train_callbacks=train_callbacks,
    )
    t_end = time.perf_counter()
    metrics = result.evaluation.metrics
    final = {key: float(metrics[metric]) for metric, key in objectives}
    epoch_s = sum(h.get("time/epoch_s", 0.0) for r in result.stages.values() for h in r.history)
    timing = {
        "time/trial_s": t_end - t_start,
        "time/pipeline_s": t_end - t_pipeline,  # stages 2-3 (worker-group start-up included), evaluation, MLflow
        "time/stages_s": sum(r.wall_s for r in result.stages.values()),
        "time/epochs_s": epoch_s,  # the epochs' own training + validation time
        "time/stage1_s": stage1.train_s if stage1 else 0.0,
        "time/stage1_epochs_s": stage1.epochs_s if stage1 else 0.0,
        "time/stage1_wait_s": stage1.wait_s if stage1 else 0.0,
        "stage1_trained": float(bool(stage1 and stage1.trained)),
    }
    run_id = result.trial_run_id
    from erasablemask.platform.tracking import log_metrics

    log_metrics(ctx["tracking_uri"], run_id, {**final, **timing}, step=0)
    client.set_tag(run_id, "tune_trial", trial_id)
    if stage1 is not None:
        client.set_tag(run_id, "stage1_key", stage1.key)
        client.set_tag(run_id, "stage1_checkpoint", str(stage1.checkpoint))
        client.set_tag(run_id, "stage1_reused", "false" if stage1.trained else "true")
    return {**final, **timing, "phase": "test", "restored": 0, "resumed": int(continued is not None),
            "mlflow_run": run_id}


def _trial(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One trial (a Tune function trainable): :func:`run_trial` on Ray, each epoch's score and the objectives
    to Tune."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    sweep = SweepConfig.model_validate(ctx["sweep"])
    report = _objective_report_callback([(o.metric, o.key) for o in sweep.objectives])
    tune.report(run_trial(sweep, dict(params), ctx, tune.get_context().get_trial_id(), train_callbacks=[report]))


# ----------------------------------------------------------------------------- driver
@dataclass
class SweepResult:
    root: Path
    tracking_uri: str
    parent_run_id: str
    trials: pd.DataFrame  # one row per Tune trial (trials.parquet)
    dataset: Path
    pareto: pd.DataFrame | None = None


def _default_cpus_per_trial(sweep: SweepConfig, cluster_cpus: float) -> float:
    free = cluster_cpus - TRIAL_DRIVER_CPU * sweep.max_concurrent
    return max(0.05, math.floor(100 * free / sweep.max_concurrent) / 100)


def _progress_callback(total: int) -> Any:
    from ray.tune import Callback

    class _Lines(Callback):
        def __init__(self) -> None:
            self.done = 0

        def _line(self, trial: Any, what: str) -> None:
            self.done += 1
            res = trial.last_result or {}
            objs = {k.removeprefix("objective/"): round(v, 4) for k, v in res.items() if k.startswith("objective/")}
            print(f"sweep: trial {trial.trial_id} {what} ({self.done}/{total}) {objs}", flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial, "finished")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial, "FAILED")

    return _Lines()


def _total_trials(sweep: SweepConfig) -> int:
    if sweep.search.algorithm == "optuna":
        return sweep.num_samples
    grid = math.prod(len(d.grid) for d in sweep.space.values() if d.kind == "grid") * max(1, len(sweep.points))
    return sweep.num_samples * grid * (len(sweep.seeds) if sweep.search.algorithm == "grid" else 1)


def _trainable(ctx: dict[str, Any]) -> Any:
    from ray import tune

    return tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"CPU": TRIAL_DRIVER_CPU})


def _run_config(sweep: SweepConfig, root: Path) -> Any:
    from ray import tune

    return tune.RunConfig(
        name="tune",
        storage_path=str(root),
        failure_config=tune.FailureConfig(max_failures=0),
        callbacks=[_progress_callback(_total_trials(sweep))],
        verbose=0,
    )


@contextlib.contextmanager
def _local_ray(address: str | None) -> Iterator[None]:
    """Ray for the sweep: join ``address``, else a local instance with this machine's CPUs and the dashboard
    (the State API lets finished Train V2 runs free their placement groups)."""
    import ray

    from erasablemask.platform.ray_session import RAY_RUNTIME_ENV

    if ray.is_initialized():
        yield
        return
    env = {"env_vars": {**RAY_RUNTIME_ENV["env_vars"], "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}}
    if "ERASABLEMASK_HOME" in os.environ:
        env["env_vars"]["ERASABLEMASK_HOME"] = os.environ["ERASABLEMASK_HOME"]
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
    else:
        for attempt in range(5):  # Ray waits a fixed 30 s for its raylet, which a loaded machine can miss
            try:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=True, runtime_env=env, log_to_driver=True)
                break
            except Exception as exc:  # noqa: BLE001 (Ray raises a bare Exception here)
                if "timed out during startup" not in str(exc) or attempt == 4:
                    raise
                ray.shutdown()
                print(f"sweep: Ray did not start in time ({exc}); trying again", flush=True)
    try:
        yield
    finally:
        ray.shutdown()


def _cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def _sweep_context(
    sweep: SweepConfig, root: Path, uri: str, experiment_id: str, parent_run_id: str, cpus_per_trial: float
) -> dict[str, Any]:
    """What every trial needs to know (``sweep.json``; :func:`run_trial`'s ``ctx``)."""
    return {
        "sweep": sweep.model_dump(mode="json"),
        "root": str(root),
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "experiment_name": sweep.base_config().tracking.experiment_name,
        "parent_run_id": parent_run_id,
        "cpus_per_trial": cpus_per_trial,
        "stage1_cache": str((Path(sweep.storage) / STAGE1_CACHE).resolve()),
    }


def run_sweep(sweep: SweepConfig, *, tracking_uri: str | None = None, address: str | None = None) -> SweepResult:
    """Run ``sweep`` from the start (module docstring). Refuses a folder that already holds a sweep (use resume).

    Raises:
        FileExistsError... as ValueError: ``<storage>/<name>`` already holds a sweep; resume it or rename.
        TrackingUnavailable: the tracking URI cannot be used.
    """
    from mlflow.tracking import MlflowClient
    from ray import tune

    root = sweep_dir(sweep)
    if (root / SWEEP_JSON).is_file():
        raise ValueError(
            f"sweep folder '{root}' already holds a sweep; continue it with `erasablemask sweep "
            f"--resume {root}`, or give the sweep another name (--set name=...) or storage"
        )
    base = sweep.base_config()
    root.mkdir(parents=True, exist_ok=True)
    uri = (
        tracking_uri
        or base.tracking.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{root / 'mlflow.db'}"
    )
    check_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    exp_id = _experiment_id(client, base, uri, root)
    with _local_ray(address):
        cpus = sweep.cpus_per_trial or _default_cpus_per_trial(sweep, _cluster_cpus())
        parent = client.create_run(
            exp_id,
            run_name=f"sweep-{sweep.name}",
            tags={"sweep_name": sweep.name, "stage": "sweep", "method": "erasablemask"},
        )
        parent_id = parent.info.run_id
        from mlflow.entities import Param

        client.log_batch(parent_id, params=[Param(k, v) for k, v in _search_params(sweep, cpus).items()])
        ctx = _sweep_context(sweep, root, uri, exp_id, parent_id, cpus)
        write_text_atomic(root / SWEEP_JSON, json.dumps(ctx, indent=2, default=str))
        print(
            f"erasablemask sweep {sweep.name}: {_total_trials(sweep)} trials, {sweep.max_concurrent} at a time, "
            f"{cpus:g} CPU per trial worker; folder {root}; MLflow {uri} (sweep run {parent_id})",
            flush=True,
        )
        search_alg, scheduler = _search_alg_and_scheduler(sweep)
        single = sweep.objectives[0] if not sweep.multi_objective else None
        tuner = tune.Tuner(
            _trainable(ctx),
            param_space=_tune_space(sweep),
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,
                num_samples=sweep.num_samples,
                max_concurrent_trials=sweep.max_concurrent,
                metric=single.key if single else None,
                mode=single.mode if single else None,
                trial_dirname_creator=lambda t: t.trial_id,
            ),
            run_config=_run_config(sweep, root),
        )
        grid = tuner.fit()
        return _finish(sweep, ctx, grid)


def resume_sweep(folder: str | Path, *, address: str | None = None) -> SweepResult:
    """Continue the sweep in ``folder`` after its driver died (``Tuner.restore``): finished trials are kept."""
    from ray import tune

    root = Path(folder).resolve()
    if not (root / SWEEP_JSON).is_file():
        raise FileNotFoundError(
            f"'{root}' is not a sweep folder (no {SWEEP_JSON}); give the folder "
            "`erasablemask sweep` printed (<storage>/<name>)"
        )
    ctx = json.loads((root / SWEEP_JSON).read_text())
    sweep = SweepConfig.model_validate(ctx["sweep"])
    if not tune.Tuner.can_restore(str(root / "tune")):
        raise FileNotFoundError(
            f"'{root / 'tune'}' holds no Tune experiment state to restore (the sweep never "
            "started its first trial); remove the folder and start the sweep again"
        )
    with _local_ray(address):
        print(f"erasablemask sweep: resuming {sweep.name} from {root / 'tune'}", flush=True)
        tuner = tune.Tuner.restore(
            str(root / "tune"),
            trainable=_trainable(ctx),
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        grid = tuner.fit()
        return _finish(sweep, ctx, grid)


def _finish(sweep: SweepConfig, ctx: dict[str, Any], grid: Any) -> SweepResult:
    """After Tune: end ASHA-stopped runs, the trials table, the dataset, the Pareto front, the report."""
    from mlflow.tracking import MlflowClient

    from erasablemask.analysis.collect import collect_run_dirs

    root = Path(ctx["root"])
    client = MlflowClient(tracking_uri=ctx["tracking_uri"])
    children = {
        r.data.params.get("tracking.run_dir"): r for r in _children(client, ctx["experiment_id"], ctx["parent_run_id"])
    }
    rows = []
    for result in grid:
        cfg_values = sweep.trial_values(dict(result.config or {}))
        trial_id = Path(result.path).name if result.path else None
        run = children.get(str(root / "trials" / str(trial_id)))
        status = "error" if result.error is not None else "finished"
        metrics = result.metrics or {}
        if run is not None and run.info.status == "RUNNING" and result.error is None:
            client.set_terminated(run.info.run_id, status="KILLED")  # stopped by ASHA: the trial process is gone
            client.set_tag(run.info.run_id, "sweep_outcome", "stopped_early")
            status = "stopped_early"
        elif metrics.get("phase") != "test" and result.error is None:
            status = "stopped_early"
        row = {
            "trial": trial_id,
            "status": status,
            "mlflow_run": run.info.run_id if run else None,
            "iterations": metrics.get("training_iteration"),
            "error": _error_line(result.error),
        }
        row.update({f"config.{k}": v for k, v in cfg_values.items()})
        for o in sweep.objectives:
            row[o.key] = metrics.get(o.key) if status == "finished" else None
        row.update({k: v for k, v in metrics.items() if k.startswith("time/") or k in ("stage1_trained", "restored", "resumed")})
        rows.append(row)
    trials = pd.DataFrame(rows)
    trials.to_parquet(root / TRIALS_PARQUET, index=False)
    summary = collect_run_dirs([root / "trials"], root / "dataset", tracking_uri=ctx["tracking_uri"])
    print(summary.line(), flush=True)
    pareto = None
    parent = ctx["parent_run_id"]
    done = trials[trials["status"] == "finished"]
    if sweep.multi_objective and len(done):
        pareto = done.assign(pareto=pareto_mask(done, sweep))
        pareto.to_parquet(root / PARETO_PARQUET, index=False)
        _draw_pareto(pareto, sweep, root / PARETO_PNG)
        client.log_artifact(parent, str(root / PARETO_PARQUET))
        client.log_artifact(parent, str(root / PARETO_PNG))
    elif len(done):
        o = sweep.objectives[0]
        best = done.loc[done[o.key].idxmax() if o.mode == "max" else done[o.key].idxmin()]
        client.log_metric(parent, f"best/{o.key}", float(best[o.key]))
        client.set_tag(parent, "best_trial", str(best["trial"]))
        client.set_tag(parent, "best_run", str(best["mlflow_run"]))
    client.log_metric(parent, "trials.finished", float((trials["status"] == "finished").sum()))
    client.log_metric(parent, "trials.failed", float((trials["status"] == "error").sum()))
    client.log_artifact(parent, str(root / TRIALS_PARQUET))
    if sweep.report and len(done):
        from erasablemask.analysis.report import write_report

        rep = write_report(root / "dataset", root / "report", n_boot=1000)
        print(f"report: {rep.index_html}", flush=True)
    failed = trials["status"] == "error"
    client.set_terminated(parent, status="FINISHED" if not failed.all() else "FAILED")
    return SweepResult(
        root=root,
        tracking_uri=ctx["tracking_uri"],
        parent_run_id=parent,
        trials=trials,
        dataset=root / "dataset",
        pareto=pareto,
    )


def _error_line(error: BaseException | None) -> str | None:
    """The exception's last line (``AttributeError: ...``), without Ray's colour codes."""
    if error is None:
        return None
    lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(error).__name__


# ----------------------------------------------------------------------------- Pareto front
def pareto_mask(table: pd.DataFrame, sweep: SweepConfig) -> pd.Series:
    """True for the rows no other row dominates (at least as good in every objective, better in one)."""
    signs = {o.key: (1.0 if o.mode == "max" else -1.0) for o in sweep.objectives}
    values = table[list(signs)].astype(float).to_numpy() * [signs[k] for k in signs]
    keep = []
    for i, v in enumerate(values):
        dominated = any((w >= v).all() and (w > v).any() for j, w in enumerate(values) if j != i)
        keep.append(not dominated)
    return pd.Series(keep, index=table.index)


def _draw_pareto(front: pd.DataFrame, sweep: SweepConfig, out: Path) -> None:
    """The first two objectives of every finished trial, the Pareto front joined and labelled."""
    from matplotlib.figure import Figure

    from erasablemask.models.atomic_files import atomic_path

    a, b = sweep.objectives[0], sweep.objectives[1]
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    rest = front[~front["pareto"]]
    ax.scatter(rest[a.key], rest[b.key], c="0.6", s=22, label="dominated trials")
    on = front[front["pareto"]].sort_values(a.key)
    ax.plot(on[a.key], on[b.key], "-o", c="C3", ms=6, label="Pareto front")
    swept = sweep.swept_keys
    for _, r in on.iterrows():
        label = ", ".join(f"{k.split('.')[-1]}={_short(r.get(f'config.{k}'))}" for k in swept[:2])
        ax.annotate(label, (r[a.key], r[b.key]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.margins(x=0.3, y=0.1)  # room for the labels
    ax.set_xlabel(f"{a.metric} ({a.mode})")
    ax.set_ylabel(f"{b.metric} ({b.mode})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"sweep {sweep.name}: {len(front)} trials, {int(front['pareto'].sum())} on the front", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _number(text: str) -> Any:
    """An MLflow param back as a float where it is one (for short display)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


# ----------------------------------------------------------------------------- status
def status_lines(folder: str | Path) -> list[str]:
    """The trials of the sweep in ``folder`` as MLflow has them (running ones included) and the best so far."""
    from mlflow.tracking import MlflowClient

    root = Path(folder).resolve()
    if not (root / SWEEP_JSON).is_file():
        raise FileNotFoundError(f"'{root}' is not a sweep folder (no {SWEEP_JSON}); give <storage>/<name>")
    ctx = json.loads((root / SWEEP_JSON).read_text())
    sweep = SweepConfig.model_validate(ctx["sweep"])
    client = MlflowClient(tracking_uri=ctx["tracking_uri"])
    runs = _children(client, ctx["experiment_id"], ctx["parent_run_id"])
    keys = sweep.swept_keys + (["seed"] if len(sweep.seeds) > 1 else [])
    lines = [
        f"sweep {sweep.name}: {len(runs)} trial runs in MLflow ({ctx['tracking_uri']}, sweep run "
        f"{ctx['parent_run_id']})",
        "  "
        + "  ".join(
            [
                f"{'trial':>11s}",
                f"{'status':9s}",
                *(f"{k[-22:]:>22s}" for k in keys),
                *(f"{o.metric[-22:]:>22s}" for o in sweep.objectives),
            ]
        ),
    ]
    scored = []
    for r in sorted(runs, key=lambda r: r.info.start_time):
        objs = [r.data.metrics.get(o.key) for o in sweep.objectives]
        tag = Path(r.data.params.get("tracking.run_dir", r.info.run_id[:8])).name  # the folder is the Tune trial id
        status = r.data.tags.get("sweep_outcome", r.info.status)
        cells = [f"{_short(_number(r.data.params.get(k, '')))[:22]:>22s}" for k in keys]
        lines.append(
            "  "
            + "  ".join(
                [
                    f"{tag:>11s}",
                    f"{status[:9]:9s}",
                    *cells,
                    *(f"{'':>22s}" if v is None else f"{v:22.4f}" for v in objs),
                ]
            )
        )
        if all(v is not None for v in objs):
            scored.append((tag, objs))
    if scored and not sweep.multi_objective:
        o = sweep.objectives[0]
        best = (max if o.mode == "max" else min)(scored, key=lambda t: t[1][0])
        lines.append(f"best so far: trial {best[0]}, {o.metric} = {best[1][0]:.4f} ({o.mode})")
    elif scored:
        table = pd.DataFrame([dict(zip([o.key for o in sweep.objectives], v)) for _, v in scored])
        mask = pareto_mask(table, sweep)
        lines.append("Pareto front so far: trials " + ", ".join(t for (t, _), m in zip(scored, mask) if m))
    if (root / PARETO_PNG).is_file():
        lines.append(f"Pareto front: {root / PARETO_PARQUET}, {root / PARETO_PNG}")
    return lines
