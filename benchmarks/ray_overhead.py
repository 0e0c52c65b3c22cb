"""Ray Train overhead: steady-state throughput of one Ray worker vs the in-process runner.

Runs stage 1 of the demo config for ``--epochs`` epochs on the same seed and
data: in-process, then as a Ray Train V2 TorchTrainer with one worker holding
``--cpus`` CPUs, then in-process again (the two in-process runs bracket the
Ray run, so a drift in machine load shows up as their difference). Prints

- the steady-state ratio: in-process epoch period / Ray epoch period, each the
  median over epochs after the first of the interval between consecutive
  epoch reports (training, validation, checkpoint and report included);
  ≥ 0.9 means Ray costs ≤ ~10 %. The same ratio of the compute-only epoch
  times (``time/epoch_s``) is printed beside it;
- the fixed start-up cost of the Ray path: its wall time minus ``epochs``
  steady-state periods (Ray start, worker group start, first-epoch warm-up,
  shutdown); the in-process run's fixed cost beside it.

Usage: python benchmarks/ray_overhead.py [--epochs 6] [--cpus 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from erasablemask.experiments.config import load_config
from erasablemask.experiments.context import in_process_context
from erasablemask.experiments.curriculum import run_stage


def _read(metrics: Path) -> tuple[list[float], list[float]]:
    """(compute-only epoch times, report-to-report periods) from a metrics.jsonl."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    stamps = [line["time/reported_unix"] for line in lines]
    return [line["time/epoch_s"] for line in lines], [b - a for a, b in zip(stamps, stamps[1:])]


def _in_process(cfg, run_dir: Path) -> tuple[float, list[float], list[float]]:
    t0 = time.perf_counter()
    run_stage(cfg, 1, in_process_context(run_dir, 1, progress=False))
    return (time.perf_counter() - t0, *_read(run_dir / "metrics.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs of the one Ray worker (and in-process threads)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the first epoch is set-up; periods need two more)")

    overrides = [f"stage1.epochs={args.epochs}", f"compute.cpus_per_worker={args.cpus}",
                 "compute.num_workers=1", *args.overrides]
    cfg = load_config("miniworld_demo", overrides)
    torch.set_num_threads(max(1, int(args.cpus)))
    with tempfile.TemporaryDirectory() as tmp:
        wall_a, epochs_a, periods_a = _in_process(cfg, Path(tmp) / "inproc_a")

        from erasablemask.platform import ray_runner

        t0 = time.perf_counter()
        ray_runner.run(cfg, (1,), run_dir=Path(tmp) / "ray", track=False)
        ray_wall = time.perf_counter() - t0
        ray_epochs, ray_periods = _read(Path(tmp) / "ray" / "metrics.jsonl")

        wall_b, epochs_b, periods_b = _in_process(cfg, Path(tmp) / "inproc_b")

    local_period = statistics.mean([statistics.median(periods_a[1:]), statistics.median(periods_b[1:])])
    local_epoch = statistics.mean([statistics.median(epochs_a[1:]), statistics.median(epochs_b[1:])])
    ray_period, ray_epoch = statistics.median(ray_periods[1:]), statistics.median(ray_epochs[1:])
    r = lambda xs: [round(x, 2) for x in xs]  # noqa: E731
    print(f"config: miniworld_demo stage 1, {args.epochs} epochs, 1 worker x {args.cpus:g} CPU, "
          f"torch threads {torch.get_num_threads()}")
    print(f"in-process (before)  epoch periods (s): {r(periods_a)}  compute {r(epochs_a)}  wall {wall_a:.1f} s")
    print(f"ray                  epoch periods (s): {r(ray_periods)}  compute {r(ray_epochs)}  wall {ray_wall:.1f} s")
    print(f"in-process (after)   epoch periods (s): {r(periods_b)}  compute {r(epochs_b)}  wall {wall_b:.1f} s")
    print(f"steady-state throughput ratio ray/in-process: {local_period / ray_period:.3f} "
          f"(compute-only epochs: {local_epoch / ray_epoch:.3f})")
    n = args.epochs
    print(f"ray fixed start-up cost: {ray_wall - n * ray_period:.1f} s "
          f"(in-process fixed cost {wall_a - n * statistics.median(periods_a[1:]):.1f} s); "
          f"wall time minus {n} steady-state epoch periods")


if __name__ == "__main__":
    main()
