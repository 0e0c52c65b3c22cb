"""Sweeps (platform/sweep.py): the Pareto front, the stage-1 cache key, and a real tiny sweep whose driver is
killed and resumed (every trial recorded once in MLflow and in the parquet dataset)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from erasablemask.experiments.config.sweep import load_sweep
from erasablemask.platform.sweep import pareto_mask, stage1_key


def test_pareto_mask_keeps_exactly_the_nondominated_trials():
    sweep = load_sweep(
        "tiny",
        [
            "objectives=[{metric: asr/black_box_mean, mode: max}, {metric: cos/black_box_mean, mode: min}]",
            "search.scheduler=fifo",
        ],
    )
    a, b = (o.key for o in sweep.objectives)
    table = pd.DataFrame({a: [0.9, 0.5, 0.5, 0.2, 0.9], b: [0.8, 0.1, 0.3, 0.05, 0.9]})
    # row 2 is dominated by row 1 (same ASR, higher cos), row 4 by row 0; 0, 1, 3 trade ASR against cos
    assert pareto_mask(table, sweep).tolist() == [True, True, False, True, False]


def test_stage1_key_changes_with_stage1_inputs_only():
    sweep = load_sweep("tiny")
    base = stage1_key(sweep.base_config(), 1)
    assert stage1_key(sweep.base_config(["stage2.lambda_adv=7", "protection.gamma=0.3"]), 1) == base
    assert stage1_key(sweep.base_config(["stage1.batch_size=4"]), 1) != base
    assert stage1_key(sweep.base_config(["seed=3"]), 1) != base
    assert stage1_key(sweep.base_config(), 2) != base  # the step cap changes what stage 1 trains


def _finished_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT count(*) FROM tags WHERE key = 'tune_trial'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return 0


@pytest.mark.slow
def test_tiny_sweep_resumes_after_the_driver_is_killed(tmp_path):
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "ERASABLEMASK_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "erasablemask.platform.cli.main", "sweep"]
    storage = tmp_path / "sweeps"
    root = storage / "tiny"
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(
            [*cli, "tiny", "--set", f"storage={storage}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 900
        while _finished_trials(root / "mlflow.db") < 1 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(2)
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    killed_at = _finished_trials(root / "mlflow.db")
    assert 1 <= killed_at < 3

    resumed = subprocess.run([*cli, "--resume", str(root)], env=env, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    trials = pd.read_parquet(root / "trials.parquet")
    assert len(trials) == 3 and trials["trial"].is_unique
    assert set(trials["status"]) <= {"finished", "stopped_early"}
    ctx = pd.read_json(root / "sweep.json", typ="series")
    client = MlflowClient(tracking_uri=ctx["tracking_uri"])
    children = client.search_runs([ctx["experiment_id"]], f"tags.mlflow.parentRunId = '{ctx['parent_run_id']}'")
    by_dir = pd.Series([r.data.params["tracking.run_dir"] for r in children])
    assert by_dir.is_unique and len(children) == 3  # one MLflow run per trial, the killed attempts deleted
    finished = trials[trials["status"] == "finished"]
    assert {client.get_run(r).info.status for r in finished["mlflow_run"]} == {"FINISHED"}
    assert finished["objective/asr/black_box_mean"].between(0, 1).all()
    runs = pd.read_parquet(root / "dataset" / "runs.parquet")
    assert sorted(runs["run"]) == sorted(finished["mlflow_run"])  # each finished trial's records once
    records = pd.read_parquet(root / "dataset" / "records")
    assert set(records["run"].astype(str)) == set(finished["mlflow_run"])
    # stage 1 was trained once, in the cache, and reused by every other trial
    assert len(list((storage / "stage1_cache").glob("*/stage1/final/state.json"))) == 1
    reused = [r.data.tags.get("stage1_reused") for r in children if "stage1_reused" in r.data.tags]
    assert reused.count("false") <= 1 and reused.count("true") >= 1
    status = subprocess.run([*cli, "--status", str(root)], env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "best so far: trial" in status.stdout
