"""``erasablemask collect``: gather runs' records and their MLflow facts into one analysis dataset.

Two ways to name the runs:

- run folders (:func:`collect_run_dirs`): each folder's ``records.parquet``
  (a folder without one is searched for them, so a sweep's folder collects
  every trial); the MLflow run is the records' ``run`` value, looked up at
  ``--tracking-uri`` or in the ``mlflow.db`` of the folder or a folder above
  it (the pipeline's default store). An untracked run (``--no-track``) gets
  its params from ``config.yaml`` and its metrics from ``evaluation.json``;
- an MLflow experiment (:func:`collect_experiment`): every run of it that
  has a ``records.parquet`` artifact.

Run-level facts become one row of ``runs.parquet`` with MLflow's own column
names (``params.<key>``, ``tags.<key>``, ``metrics.<key>``, as
``mlflow.search_runs`` returns them), so a pandas user joins records to
configs on ``run``. Collecting is idempotent and incremental
(:func:`~erasablemask.analysis.dataset.add_run`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from erasablemask.analysis.dataset import add_run, file_sha256, init_dataset, read_records_file

__all__ = ["CollectSummary", "collect_run_dirs", "collect_experiment", "find_records_files"]

RECORDS_FILE = "records.parquet"
GRID_FILE = "protection_grid.png"


@dataclass
class CollectSummary:
    """What one collect did: run keys by outcome, and the dataset folder."""

    dataset: Path
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def record(self, run: str, outcome: str) -> None:
        getattr(self, outcome).append(run)

    def line(self) -> str:
        return (f"collected into {self.dataset}: {len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.unchanged)} unchanged")


def find_records_files(path: Path) -> list[Path]:
    """``path/records.parquet``, else every ``records.parquet`` below ``path`` (sorted).

    Raises:
        FileNotFoundError: no such folder, or no records under it (names the fix).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder '{path}' not found")
    if (path / RECORDS_FILE).is_file():
        return [path / RECORDS_FILE]
    found = sorted(p for p in path.rglob(RECORDS_FILE) if not any(part.startswith(".") for part in p.parts))
    if not found:
        raise FileNotFoundError(f"no {RECORDS_FILE} in or below '{path}'; evaluate the run first "
                                f"(erasablemask train ... --evaluate)")
    return found


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}``, values as MLflow logs params (lists/dicts as JSON)."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(node) if isinstance(node, list) else str(node)
    return out


def _mlflow_facts(client: Any, run_id: str) -> dict[str, Any] | None:
    """One MLflow run's facts as ``runs.parquet`` columns, or None when ``run_id`` is not a run there."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    info, data = run.info, run.data
    try:
        experiment = client.get_experiment(info.experiment_id).name
    except MlflowException:
        experiment = None
    facts: dict[str, Any] = {
        "mlflow_run_id": info.run_id, "run_name": info.run_name, "experiment": experiment,
        "experiment_id": info.experiment_id,
        "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
        "artifact_uri": info.artifact_uri, "parent_run": data.tags.get("mlflow.parentRunId"),
    }
    facts.update({f"params.{k}": v for k, v in data.params.items()})
    facts.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
    facts.update({f"metrics.{k}": float(v) for k, v in data.metrics.items()})
    return facts


def _folder_facts(run_dir: Path) -> dict[str, Any]:
    """Facts of an untracked run from its folder: ``config.yaml`` params, ``evaluation.json`` metrics."""
    import yaml  # MLflow's dependency; reads the pipeline's config.yaml

    facts: dict[str, Any] = {}
    config = run_dir / "config.yaml"
    if config.is_file():
        facts.update({f"params.{k}": v for k, v in _flatten(yaml.safe_load(config.read_text()) or {}).items()})
    summary = run_dir / "evaluation.json"
    if summary.is_file():
        metrics = json.loads(summary.read_text()).get("metrics", {})
        # The names the tracker gives them in MLflow (platform/tracking.py: test/ prefix, '@' -> '_at_').
        facts.update({f"metrics.test/{k.replace('@', '_at_')}": float(v) for k, v in metrics.items()
                      if isinstance(v, (int, float))})
    return facts


def _find_store(run_dir: Path, top: Path) -> str | None:
    """``sqlite:///.../mlflow.db`` of ``run_dir`` or of a folder above it up to ``top``, or None."""
    for folder in (run_dir, *run_dir.parents):
        if (folder / "mlflow.db").is_file():
            return f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        if folder == top:
            break
    return None


def _split_runs(table: pa.Table) -> dict[str, pa.Table]:
    runs = pc.unique(table.column("run")).to_pylist()
    if any(r is None for r in runs):
        raise ValueError("records have rows without a 'run' value; they were not written by write_records")
    return {r: table.filter(pc.equal(table.column("run"), r)) for r in runs}


def _add(summary: CollectSummary, records_file: Path, base: dict[str, Any], facts_of: Any,
         grid: Path | None) -> None:
    table = read_records_file(records_file)
    sha = file_sha256(records_file)
    for run, rows in _split_runs(table).items():
        facts = {**base, "records_sha256": sha, "n_records": rows.num_rows,
                 "methods": ",".join(sorted(pc.unique(rows.column("method")).to_pylist())), **facts_of(run),
                 "collected_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        summary.record(run, add_run(summary.dataset, run, rows, facts, grid))


def collect_run_dirs(paths: list[Path], out: Path, *, tracking_uri: str | None = None) -> CollectSummary:
    """Collect every evaluated run in or below ``paths`` into the dataset ``out``.

    Args:
        paths: run folders (or folders holding run folders, e.g. a sweep's).
        out: the dataset folder (created; an existing dataset is added to).
        tracking_uri: where the runs' MLflow records are (default: the ``mlflow.db`` beside them).

    Returns:
        :class:`CollectSummary` (added / updated / unchanged run keys).
    """
    from mlflow.tracking import MlflowClient

    summary = CollectSummary(init_dataset(Path(out)))
    clients: dict[str, Any] = {}
    for top in (Path(p).resolve() for p in paths):
        for records_file in find_records_files(top):
            run_dir = records_file.parent
            uri = tracking_uri or _find_store(run_dir, top)
            client = clients.setdefault(uri, MlflowClient(tracking_uri=uri)) if uri else None

            def facts_of(run: str, client: Any = client, uri: str | None = uri, run_dir: Path = run_dir) -> dict:
                found = _mlflow_facts(client, run) if client is not None else None
                if found is not None:
                    return {"tracking_uri": uri, **found}
                return {"tracking_uri": None, **_folder_facts(run_dir)}  # untracked: the folder's files

            grid = run_dir / GRID_FILE
            _add(summary, records_file, {"source": "run_dir", "run_dir": str(run_dir)}, facts_of,
                 grid if grid.is_file() else None)
    return summary


def collect_experiment(tracking_uri: str, experiment: str, out: Path) -> CollectSummary:
    """Collect every run of MLflow experiment ``experiment`` that logged a ``records.parquet`` artifact.

    Raises:
        ValueError: no experiment of that name at ``tracking_uri`` (the message lists the ones there).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment '{experiment}' at '{tracking_uri}'; experiments there: {names}")
    summary = CollectSummary(init_dataset(Path(out)))
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=500, page_token=token)
        for run in page:
            run_id = run.info.run_id
            names = {Path(f.path).name for f in client.list_artifacts(run_id)}
            if RECORDS_FILE not in names:
                continue  # stage runs and runs without an evaluation
            with tempfile.TemporaryDirectory() as tmp:
                records_file = Path(client.download_artifacts(run_id, RECORDS_FILE, tmp))
                grid_names = {Path(f.path).name for f in client.list_artifacts(run_id, "grids")}
                grid = (Path(client.download_artifacts(run_id, f"grids/{GRID_FILE}", tmp))
                        if GRID_FILE in grid_names else None)
                facts = {"tracking_uri": tracking_uri, **(_mlflow_facts(client, run_id) or {})}
                _add(summary, records_file, {"source": "mlflow", "run_dir": None}, lambda _run: facts, grid)
        token = page.token
        if not token:
            return summary
