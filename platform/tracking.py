"""MLflow tracking: runs nest sweep -> trial -> stage.

A trial (one reproduction: ``train``, the demo, or one trial of a sweep) is
one run, with a child run per stage; a sweep's run, when there is one, is the
trial's parent. The pipeline (``platform/pipeline.py``) opens the trial run,
the stages' child runs and logs the evaluation to the trial run itself, so
nothing is read back from the run folder afterwards.

The tracking URI comes from the config, else ``$MLFLOW_TRACKING_URI``, else
an sqlite file in the run directory, never the deprecated ``./mlruns`` file
store. A server URI is probed before any training starts, so an unreachable
server fails fast, naming the URI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
# Packages whose versions go into every run's manifest.
MANIFEST_PACKAGES = ("erasablemask", "torch", "torchvision", "ray", "mlflow", "kornia", "numpy", "optuna")
# The protection the pipeline evaluates (ErasableMaskProtection.name), the ``method`` tag of its runs.
PIPELINE_METHOD = "erasablemask"
# Metrics and model groups logged under flat headline names (:func:`headline_metrics`).
HEADLINE_METRICS = ("asr", "esr", "idr")
HEADLINE_GROUPS = ("black_box_mean", "surrogates_mean")


class TrackingUnavailable(RuntimeError, UserError):
    """The MLflow tracking URI cannot be used; the message names it (the CLI prints it as one line)."""


# URI schemes an MLflow 3 tracking store accepts (SQLAlchemy databases take a `+driver` suffix).
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def resolve_tracking_uri(cfg: ErasableMaskConfig, run_dir: Path) -> str:
    """Config, then ``$MLFLOW_TRACKING_URI``, then ``sqlite:///<run_dir>/mlflow.db``."""
    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        run_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    return uri


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail before training if ``uri`` is a file store or an unreachable server."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme in ("", "file"):
        raise TrackingUnavailable(
            f"tracking URI '{uri}' is a file store, which MLflow 3 no longer supports; "
            "use sqlite:///path/mlflow.db or an http(s):// MLflow server"
        )
    if scheme.split("+", 1)[0].lower() not in TRACKING_SCHEMES:
        raise TrackingUnavailable(
            f"tracking URI '{uri}' has the scheme '{scheme}', which MLflow cannot track to; use "
            f"sqlite:///path/mlflow.db or an http(s):// MLflow server (allowed: {', '.join(TRACKING_SCHEMES)}); "
            "fix tracking.tracking_uri / $MLFLOW_TRACKING_URI"
        )
    if scheme in ("http", "https"):
        probe = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(probe, timeout=timeout) as resp:  # noqa: S310 (user-given URI)
                if resp.status != 200:
                    raise TrackingUnavailable(f"MLflow server at '{uri}' answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailable(
                f"cannot reach the MLflow tracking server '{uri}' ({exc}); start it or fix "
                "tracking.tracking_uri / $MLFLOW_TRACKING_URI"
            ) from None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        commit = out.stdout.strip() or "unknown"
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_manifest(cfg: ErasableMaskConfig, **extra: Any) -> dict[str, Any]:
    """Config hash, git commit, package versions and seeds of a run."""
    versions = {}
    for name in MANIFEST_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "config_digest": cfg.digest(),
        "git_commit": git_commit(),
        "packages": versions,
        "seed": cfg.seed,
        "worker_seeds": {rank: worker_seed(cfg.seed, rank) for rank in range(cfg.compute.num_workers)},
        **extra,
    }


def worker_seed(seed: int, rank: int) -> int:
    """Per-rank seed derived from the config seed (documented in the manifest)."""
    return seed * 1000 + rank


def target_tag(cfg: ErasableMaskConfig) -> str:
    """The impersonation target(s) a config asks for, as one tag value.

    ``miniworld_heldout/seeded x1`` (mode, selection, count) on the
    mini-world; with ``mode=images`` the training images' file names,
    comma-joined. The identities actually drawn are the ``targets`` tag,
    set when the run is evaluated (:meth:`Tracker.log_evaluation`).
    """
    t = cfg.attack.target
    if t.mode == "images":
        return ",".join(Path(p).name for p in t.train_images)
    return f"{t.mode}/{t.selection} x{t.count}"


def run_tags(cfg: ErasableMaskConfig, *, sweep: str | None = None, method: str = PIPELINE_METHOD,
             **extra: str) -> dict[str, str]:
    """The tags of every run of a trial, the columns a comparison dashboard groups and filters by.

    Args:
        cfg: the resolved config.
        sweep: the sweep's MLflow run id (the trial's parent); ``None``: the tag is ``"none"``.
        method: the protection evaluated, as in the records' ``method`` column
            (the pipeline's is ErasableMask; a competitor's run passes its own name).
        **extra: further tags (``stage``, ``runner``), which may override these.

    Returns:
        ``method``, ``attack`` (``attack.method``: meta_auxiliary, first_order,
        ensemble — Table VII's variants), ``surrogates``, ``black_box``
        (comma-joined model names), ``dataset`` (``data.kind``),
        ``data_kind``, ``sweep``, ``seed``, ``target`` (:func:`target_tag`),
        ``config_digest`` and ``extra``.
    """
    return {
        "method": method,
        "attack": cfg.attack.method,
        "surrogates": ",".join(cfg.attack.surrogates),
        "black_box": ",".join(cfg.attack.black_box),
        "dataset": cfg.data.kind,
        "data_kind": "mini-world (synthetic)" if cfg.data.kind == "miniworld" else "real",
        "sweep": sweep or "none",
        "seed": str(cfg.seed),
        "target": target_tag(cfg),
        "config_digest": cfg.digest(),
        **extra,
    }


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The evaluation's group means under flat, stable names for MLflow's runs table and charts.

    ``<metric>/<group>`` -> ``<metric>.<group>``, ``<metric>@<t>/<group>`` -> ``<metric>_at_<t>.<group>``
    (``asr/black_box_mean`` -> ``asr.black_box_mean``), for :data:`HEADLINE_METRICS` and :data:`HEADLINE_GROUPS`.
    Per-model values stay under their ``test/...`` keys (``test/asr/<model>``, ``test/asr_at_jpeg/<model>``).

    Args:
        metrics: evaluation summary keys (``EvaluationReport.metrics``) -> values in [0, 1].

    Returns:
        The headline subset, renamed; empty when ``metrics`` has no group means.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name, _, group = key.partition("/")
        metric, _, transform = name.partition("@")
        if metric in HEADLINE_METRICS and group in HEADLINE_GROUPS:
            out[f"{metric}_at_{transform}.{group}" if transform else f"{metric}.{group}"] = value
    return out


def _experiment_id(client: Any, cfg: ErasableMaskConfig, uri: str, run_dir: Path) -> str:
    """The id of ``tracking.experiment_name`` at ``uri``, created if new (sqlite: artifacts under ``run_dir``)."""
    exp = client.get_experiment_by_name(cfg.tracking.experiment_name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = (run_dir / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(cfg.tracking.experiment_name, artifact_location=artifact_location)


@dataclass(frozen=True)
class RunRef:
    """Where one MLflow run's records go: the tracking URI and the run id (picklable, for Ray workers)."""

    uri: str
    run_id: str

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Log the numeric entries of ``metrics`` at ``step`` (:func:`log_metrics`)."""
        log_metrics(self.uri, self.run_id, metrics, step)


@dataclass
class Tracker:
    """The MLflow runs of one trial: the trial run and a child run per stage.

    Runs nest sweep -> trial -> stage: a plain ``train`` is a trial without a
    sweep (a top-level run); given ``parent_run_id`` (a sweep's run), the
    trial is created as that run's child, in its experiment. Use :meth:`open`
    (a context manager) rather than constructing directly.
    """

    uri: str
    experiment_id: str
    trial_run_id: str
    client: Any = field(repr=False)
    runner: str = "ray"  # tag of every run: "ray" or "in-process"
    sweep: str | None = None  # the sweep's run id (the trial's parent), tag of every run
    continued: bool = False  # the trial run is an earlier attempt's (``continue_run_id``): its stage runs go on

    @classmethod
    @contextmanager
    def open(cls, cfg: ErasableMaskConfig, run_dir: Path, *, run_name: str | None = None,
             runner: str = "ray", parent_run_id: str | None = None,
             tags: Mapping[str, str] | None = None, continue_run_id: str | None = None) -> Iterator["Tracker"]:
        """Create the trial run (params, tags, manifest); end it FINISHED, or FAILED if the block raises.

        Args:
            cfg: the resolved config (its ``tracking`` section names the URI and experiment).
            run_dir: the run folder (the default sqlite store and artifact root live there).
            run_name: the trial run's name (default ``train-<config digest>``).
            runner: ``"ray"`` or ``"in-process"`` (a tag).
            parent_run_id: a sweep's run to nest the trial under (``None``: top level).
            tags: tags that override :func:`run_tags`' (``erasablemask evaluate``: ``stage=evaluate``,
                ``method``, ``sweep=none`` for a run nested under the trial it evaluates).
            continue_run_id: an earlier attempt's trial run of this config (a sweep's restarted trial) to
                continue instead of creating one: it is set RUNNING again, keeps its params, manifest and
                finished stage runs, and a stage trained again continues its own stage run (:meth:`start_stage`).

        Raises:
            TrackingUnavailable: the URI is a file store or unreachable, or
                ``parent_run_id`` / ``continue_run_id`` is not a run at that URI.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(cfg, run_dir)
        check_tracking_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        tags = {**run_tags(cfg, sweep=parent_run_id, stage="all", runner=runner), **(tags or {})}
        if parent_run_id is not None:
            try:
                exp_id = client.get_run(parent_run_id).info.experiment_id
            except MlflowException as exc:
                raise TrackingUnavailable(
                    f"parent run '{parent_run_id}' is not a run at '{uri}' ({exc.message}); pass the id of the "
                    "sweep's run at the same tracking URI"
                ) from None
            tags["mlflow.parentRunId"] = parent_run_id
        else:
            exp_id = _experiment_id(client, cfg, uri, run_dir)
        if continue_run_id is not None:
            try:
                trial = client.get_run(continue_run_id)
            except MlflowException as exc:
                raise TrackingUnavailable(f"run '{continue_run_id}' to continue is not a run at '{uri}' "
                                          f"({exc.message})") from None
            client.update_run(continue_run_id, status="RUNNING")
        else:
            trial = client.create_run(exp_id, run_name=run_name or f"train-{cfg.digest()}", tags=tags)
        tracker = cls(uri=uri, experiment_id=exp_id, trial_run_id=trial.info.run_id, client=client, runner=runner,
                      sweep=parent_run_id, continued=continue_run_id is not None)
        if continue_run_id is None:
            tracker.log_params(trial.info.run_id, cfg.flat())
            tracker.log_json(trial.info.run_id, run_manifest(cfg), "manifest.json")
        status = "FAILED"
        try:
            yield tracker
            status = "FINISHED"
        finally:
            client.set_terminated(trial.info.run_id, status=status)

    def start_stage(self, cfg: ErasableMaskConfig, stage: int) -> str:
        """Create the child run of ``stage``; returns its run id.

        A continued trial run (``continued``) that already has a run of ``stage`` (the attempt that died in
        it) continues that one, set RUNNING again: the epochs logged before the checkpoint it resumes from stay.
        """
        if self.continued:
            earlier = self.client.search_runs(
                [self.experiment_id], order_by=["attributes.start_time DESC"],
                filter_string=f"tags.mlflow.parentRunId = '{self.trial_run_id}' and tags.stage = '{stage}'")
            if earlier:
                self.client.update_run(earlier[0].info.run_id, status="RUNNING")
                return earlier[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"stage{stage}",
            tags={**run_tags(cfg, sweep=self.sweep, stage=str(stage), runner=self.runner),
                  "mlflow.parentRunId": self.trial_run_id},
        )
        self.log_params(run.info.run_id, cfg.flat())
        return run.info.run_id

    def end_stage(self, run_id: str, *, ok: bool) -> None:
        self.client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")

    @contextmanager
    def stage_run(self, cfg: ErasableMaskConfig, stage: int) -> Iterator[str]:
        """The child run of ``stage`` (its id), ended FINISHED, or FAILED if the block raises."""
        run_id = self.start_stage(cfg, stage)
        ok = False
        try:
            yield run_id
            ok = True
        finally:
            self.end_stage(run_id, ok=ok)

    def log_stage_outputs(self, cfg: ErasableMaskConfig, stage: int, run_id: str, checkpoint: Path) -> None:
        """The stage's final checkpoint under ``checkpoint/``, and (stages 2, 3) the image grid
        (source | attribute-edited | protected | erased, with the target) under ``grids/``."""
        self.log_artifacts(run_id, Path(checkpoint), "checkpoint")
        if stage == 1:
            return
        from erasablemask.experiments.evaluation.protection_grid import protection_grid

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"grid_stage{stage}.png"
            protection_grid(cfg, Path(checkpoint)).save(path)
            self.client.log_artifact(run_id, str(path), "grids")

    def log_evaluation(self, metrics: dict[str, float], files: list[Path], *, targets: Sequence[str] = ()) -> None:
        """Test-split metrics, the headline means, the targets and ``files`` on the trial run.

        Every metric as ``test/<key>`` (step 0; keys pass through :func:`mlflow_key`:
        ``asr@jpeg/m`` -> ``test/asr_at_jpeg/m``), the group means also under
        :func:`headline_metrics`' names (``asr.black_box_mean``), ``targets``
        (the identities evaluated against) as the ``targets`` tag, comma-joined.
        ``.png`` files go under ``grids/``, anything else at the artifact root.
        """
        self.log_metrics(self.trial_run_id, {f"test/{k}": v for k, v in metrics.items()}, step=0)
        self.log_metrics(self.trial_run_id, headline_metrics(metrics), step=0)
        if targets:
            self.client.set_tag(self.trial_run_id, "targets", ",".join(targets))
        for f in files:
            self.client.log_artifact(self.trial_run_id, str(f), "grids" if Path(f).suffix == ".png" else None)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's log_batch limit
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        log_metrics(self.uri, run_id, metrics, step)

    def log_json(self, run_id: str, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)


_NOT_IN_MLFLOW_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow metric key: ``@`` becomes ``_at_`` (``asr@jpeg/m`` -> ``asr_at_jpeg/m``), and any
    other character MLflow refuses (it allows alphanumerics, ``_ - . : /`` and spaces) becomes ``_``."""
    return _NOT_IN_MLFLOW_NAMES.sub("_", name.replace("@", "_at_"))


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log numeric metrics at ``step`` (keys through :func:`mlflow_key`); usable from a Ray worker."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    items = [
        Metric(mlflow_key(key), float(value), now, step)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    client = MlflowClient(tracking_uri=uri)
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


@contextmanager
def optional_tracker(cfg: ErasableMaskConfig, run_dir: Path, enabled: bool, *, runner: str,
                     parent_run_id: str | None = None, continue_run_id: str | None = None) -> Iterator[Tracker | None]:
    """:meth:`Tracker.open` (the trial run) when ``enabled``, else ``None`` (``--no-track``)."""
    if not enabled:
        yield None
        return
    with Tracker.open(cfg, run_dir, runner=runner, parent_run_id=parent_run_id,
                      continue_run_id=continue_run_id) as tracker:
        yield tracker


@contextmanager
def optional_stage_run(tracker: Tracker | None, cfg: ErasableMaskConfig, stage: int) -> Iterator[RunRef | None]:
    """:meth:`Tracker.stage_run` (the child run), or ``None`` without a tracker."""
    if tracker is None:
        yield None
        return
    with tracker.stage_run(cfg, stage) as run_id:
        yield RunRef(tracker.uri, run_id)


def where_lines(uri: str | None, run_id: str | None) -> list[str]:
    """Where a trial's MLflow records are (``uri``, ``run_id``; ``None``: not tracked) and how to open the UI."""
    if uri is None or run_id is None:
        return ["  MLflow          not tracked (--no-track)"]
    lines = [f"  MLflow runs     {uri}  (trial run {run_id})"]
    if uri.startswith("sqlite:"):
        lines.append(f"  open the UI:    .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    else:
        lines.append(f"  open the UI:    {uri}")
    return lines
