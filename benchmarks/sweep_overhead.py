"""Sweep overhead: per-trial fixed cost (Tune + Train start-up, MLflow) against the trial's training time,
with and without stage-1 reuse, on the tiny sweep (experiments/configs/sweeps/tiny.yaml).

Runs the tiny sweep twice on fresh storage, each with a fresh local Ray and the same Optuna seed (so the
same trials): once with ``reuse_stage1: true`` (the default: one stage-1 checkpoint shared through the
cache) and once with ``reuse_stage1: false`` (every trial trains its own stage 1). Per trial (from
``trials.parquet``, the trial's final Tune report):

- ``train_s``: the epochs' own time (``time/epochs_s`` + ``time/stage1_epochs_s``: training steps and
  validation, measured inside the stage loop);
- ``fixed_s``: the rest of the trial, ``time/trial_s - train_s - time/stage1_wait_s``: Train worker-group
  start-up per stage, the evaluation, MLflow runs and artifacts, Tune's trial bookkeeping;
- ``wait_s``: time spent waiting for another trial to finish the shared stage 1.

Then the sweeps' wall times (including Ray and Tune start-up) and their ratio. The mini FR zoo is trained
once before the first sweep (its own cache; both sweeps find it). Timing on a shared machine varies; the
figures are ratios within one run.

Usage: python benchmarks/sweep_overhead.py [--storage DIR] [--set key=value ...]   (sweep-file overrides)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd


def _one(storage: Path, reuse: bool, extra: list[str]) -> tuple[float, pd.DataFrame]:
    from erasablemask.experiments.config.sweep import load_sweep
    from erasablemask.platform.sweep import run_sweep

    name = "tiny_reuse" if reuse else "tiny_no_reuse"
    sweep = load_sweep(
        "tiny",
        [f"storage={storage}", f"name={name}", f"reuse_stage1={str(reuse).lower()}", "search.scheduler=fifo", *extra],
    )
    t0 = time.perf_counter()
    result = run_sweep(sweep)
    wall = time.perf_counter() - t0
    t = result.trials.copy()
    t["train_s"] = t["time/epochs_s"] + t["time/stage1_epochs_s"]
    t["fixed_s"] = t["time/trial_s"] - t["train_s"] - t["time/stage1_wait_s"]
    t["wait_s"] = t["time/stage1_wait_s"]
    return wall, t


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default=None, help="where the two sweeps go (default: a temporary folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    storage = Path(args.storage or tempfile.mkdtemp(prefix="sweep-overhead-"))
    out = {}
    for reuse in (True, False):
        wall, t = _one(storage / ("reuse" if reuse else "no_reuse"), reuse, args.overrides)
        cols = ["trial", "status", "time/trial_s", "train_s", "fixed_s", "wait_s", "time/stage1_s", "stage1_trained"]
        print(f"\nstage-1 reuse {'ON' if reuse else 'OFF'}: sweep wall {wall:.0f} s")
        print(t[cols].round(1).to_string(index=False))
        ok = t[t["status"] == "finished"]
        out["reuse" if reuse else "no_reuse"] = {
            "wall_s": wall,
            "trials": len(t),
            "trial_s_mean": float(ok["time/trial_s"].mean()),
            "train_s_mean": float(ok["train_s"].mean()),
            "fixed_s_mean": float(ok["fixed_s"].mean()),
            "fixed_over_train": float(ok["fixed_s"].sum() / ok["train_s"].sum()),
            "stage1_trainings": int(ok["stage1_trained"].sum()),
        }
    r, n = out["reuse"], out["no_reuse"]
    print(
        f"\nper trial, mean: fixed cost {r['fixed_s_mean']:.0f} s (reuse) / {n['fixed_s_mean']:.0f} s (no reuse) "
        f"against training {r['train_s_mean']:.1f} s / {n['train_s_mean']:.1f} s "
        f"(fixed/training {r['fixed_over_train']:.1f}x / {n['fixed_over_train']:.1f}x)"
    )
    print(
        f"stage 1 trained {r['stage1_trainings']}x with reuse, {n['stage1_trainings']}x without; sweep wall "
        f"{r['wall_s']:.0f} s vs {n['wall_s']:.0f} s: reuse takes {r['wall_s'] / n['wall_s']:.2f}x the time"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
