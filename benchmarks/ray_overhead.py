"""Ray Train overhead: steady-state throughput of one Ray worker vs the in-process runner.

Runs stage 1 of the (shrunk) demo config for ``--epochs`` epochs twice, on the
same seed and data: in-process, then as a Ray Train V2 TorchTrainer with one
worker holding ``--cpus`` CPUs. Prints

- the steady-state ratio: in-process epoch time / Ray epoch time, both taken
  as the median over epochs after the first (≥ 0.9 means Ray costs ≤ ~10 %);
- the fixed start-up cost of the Ray path: its wall time minus the sum of its
  epoch times (Ray start, worker group start, checkpoint upload, shutdown).

Usage: python benchmarks/ray_overhead.py [--epochs 4] [--cpus 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from erasablemask.experiments.config import load_config
from erasablemask.experiments.context import in_process_context
from erasablemask.experiments.curriculum import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPUs of the one Ray worker (and in-process threads)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    overrides = [f"stage1.epochs={args.epochs}", f"compute.cpus_per_worker={args.cpus}",
                 "compute.num_workers=1", *args.overrides]
    cfg = load_config("miniworld_demo", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(max(1, int(args.cpus)))
        t0 = time.perf_counter()
        local = run_stage(cfg, 1, in_process_context(Path(tmp) / "inproc", 1, progress=False))
        local_wall = time.perf_counter() - t0
        local_epochs = [h["time/epoch_s"] for h in local.history]

        from erasablemask.platform import ray_runner

        t0 = time.perf_counter()
        ray_runner.run(cfg, (1,), run_dir=Path(tmp) / "ray", track=False)
        ray_wall = time.perf_counter() - t0
        import json

        lines = [json.loads(l) for l in (Path(tmp) / "ray" / "metrics.jsonl").read_text().splitlines()]
        ray_epochs = [line["time/epoch_s"] for line in lines]

    steady_local = statistics.median(local_epochs[1:] or local_epochs)
    steady_ray = statistics.median(ray_epochs[1:] or ray_epochs)
    print(f"config: miniworld_demo stage 1, {args.epochs} epochs, 1 worker x {args.cpus:g} CPU, torch threads "
          f"{torch.get_num_threads()}")
    print(f"in-process epoch times (s): {[round(t, 2) for t in local_epochs]}  wall {local_wall:.1f} s")
    print(f"ray        epoch times (s): {[round(t, 2) for t in ray_epochs]}  wall {ray_wall:.1f} s")
    print(f"steady-state throughput ratio ray/in-process: {steady_local / steady_ray:.3f}")
    print(f"ray fixed start-up cost: {ray_wall - sum(ray_epochs):.1f} s "
          f"(in-process fixed cost {local_wall - sum(local_epochs):.1f} s)")


if __name__ == "__main__":
    main()
