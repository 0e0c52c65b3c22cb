"""Ray Train overhead: steady-state throughput of one Ray worker vs the in-process runner.

Runs stage 1 of the demo config for ``--epochs`` epochs on the same seed and
data, alternating: in-process, Ray, in-process, Ray, ..., in-process
(``--rounds`` Ray runs, each a Ray Train V2 TorchTrainer with one worker
holding ``--cpus`` CPUs and a fresh local Ray instance). Each Ray run is
compared with the mean of the two in-process runs that bracket it, so a
drift in the machine's speed (up to 15 % within minutes on the shared
2-core development machine) is paired out as far as it can be. Prints, per
round and as the median over rounds:

- the steady-state ratio: in-process epoch period / Ray epoch period, each the
  median over epochs after the first of the interval between consecutive
  epoch reports (training, validation, checkpoint and report included);
  ≥ 0.9 means Ray costs ≤ ~10 %. The same ratio of the compute-only epoch
  times (``time/epoch_s``) is printed beside it;
- the fixed start-up cost of the Ray path: its wall time minus ``epochs``
  steady-state periods (Ray start, worker group start, first-epoch warm-up,
  shutdown); the in-process runs' fixed cost beside it.

Usage: python benchmarks/ray_overhead.py [--epochs 8] [--rounds 3] [--cpus 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from erasablemask.experiments.config.loading import load_config
from erasablemask.platform.runners import in_process


def _read(metrics: Path) -> tuple[list[float], list[float]]:
    """(compute-only epoch times, report-to-report periods) from a metrics.jsonl."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    stamps = [line["time/reported_unix"] for line in lines]
    return [line["time/epoch_s"] for line in lines], [b - a for a, b in zip(stamps, stamps[1:])]


def _in_process(cfg, run_dir: Path) -> tuple[float, list[float], list[float]]:
    t0 = time.perf_counter()
    in_process.run_stage(cfg, 1, run_dir=run_dir, progress=False)
    return (time.perf_counter() - t0, *_read(run_dir / "metrics.jsonl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="Ray runs, each bracketed by in-process runs")
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs of the one Ray worker (and in-process threads)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (the first epoch is set-up; periods need two more)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    overrides = [f"stage1.epochs={args.epochs}", f"compute.cpus_per_worker={args.cpus}",
                 "compute.num_workers=1", *args.overrides]
    cfg = load_config("miniworld_demo", overrides)
    torch.set_num_threads(max(1, int(args.cpus)))
    n = args.epochs
    r = lambda xs: [round(x, 2) for x in xs]  # noqa: E731
    print(f"config: miniworld_demo stage 1, {n} epochs, 1 worker x {args.cpus:g} CPU, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds", flush=True)

    from erasablemask.platform.ray_session import ray_session
    from erasablemask.platform.runners import ray_train

    with tempfile.TemporaryDirectory() as tmp:
        def in_process(i: int) -> tuple[float, float, float]:
            wall, epochs, periods = _in_process(cfg, Path(tmp) / f"inproc{i}")
            period = statistics.median(periods[1:])
            print(f"in-process {i}: epoch periods (s) {r(periods)}  compute {r(epochs)}  wall {wall:.1f} s",
                  flush=True)
            return period, statistics.median(epochs[1:]), wall - n * period

        local = [in_process(0)]
        rounds = []
        for i in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            with ray_session(cfg=cfg):  # a fresh local instance per round: its start-up is part of the fixed cost
                ray_train.run_stage(cfg, 1, run_dir=Path(tmp) / f"ray{i}")
            wall = time.perf_counter() - t0
            epochs, periods = _read(Path(tmp) / f"ray{i}" / "metrics.jsonl")
            period, epoch = statistics.median(periods[1:]), statistics.median(epochs[1:])
            print(f"ray {i}:        epoch periods (s) {r(periods)}  compute {r(epochs)}  wall {wall:.1f} s", flush=True)
            local.append(in_process(i))
            before, after = local[-2], local[-1]
            ratio = (before[0] + after[0]) / 2 / period
            compute_ratio = (before[1] + after[1]) / 2 / epoch
            rounds.append((ratio, compute_ratio, wall - n * period))
            print(f"round {i}: steady-state throughput ratio ray/in-process {ratio:.3f} "
                  f"(compute-only {compute_ratio:.3f}); ray fixed start-up cost {wall - n * period:.1f} s", flush=True)

    med = lambda i: statistics.median(x[i] for x in rounds)  # noqa: E731
    print(f"steady-state throughput ratio ray/in-process: median {med(0):.3f} over {len(rounds)} rounds "
          f"{r([x[0] for x in rounds])} (compute-only epochs: {med(1):.3f})")
    print(f"ray fixed start-up cost: median {med(2):.1f} s {r([x[2] for x in rounds])} "
          f"(in-process fixed cost {statistics.median(x[2] for x in local):.1f} s); "
          f"wall time minus {n} steady-state epoch periods")


if __name__ == "__main__":
    main()
