"""Cost of surrogates in Ray actors: one stage-2 step with K remote surrogates ÷ the same step with local ones.

For the meta-auxiliary attack (second order through the actors) and the plain
ensemble, it times the full stage-2 step of ``benchmarks/meta_aux.py``
(``stage2_step``: protect → noise → L_adv → R, D heads → Eq. 15 → backward →
Adam) with the surrogates local, then served by :class:`FRActor` actors
through :class:`RemoteFaceRecognizer` proxies, and counts the round trips and
tensor bytes per step. Bytes at paper size are projected from the measured
bytes (they scale with pixels × batch: every call carries its images, and the
embeddings are negligible) and divided by an interconnect's bandwidth.

    python benchmarks/remote_surrogates.py            # CPU, mini FR nets, 32², batch 4, K=3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_aux as bench  # noqa: E402  (benchmarks/ is not a package)

from erasablemask.experiments.config.schema import RemoteFRConfig  # noqa: E402
from erasablemask.platform.fr_actors import start_fr_actors  # noqa: E402

# Bytes/s of links a remote surrogate's traffic could cross (nominal).
LINKS = {"same node, shared memory (~10 GB/s)": 10e9, "100 Gb/s Ethernet": 12.5e9, "25 Gb/s Ethernet": 3.1e9}


def one_surrogate(kind: str, name: str, size: int) -> torch.nn.Module:
    """The actor's factory: the same random-weight surrogate ``meta_aux.build_surrogates`` makes locally."""
    return bench.build_surrogates(kind, [name], size)[name]


def time_steps(c, method: str, warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` stage-2 steps after ``warmup`` ones; proxies' traffic counts the timed ones only."""
    for step in range(warmup):
        bench.stage2_step(c, method, step, None)
    for fr in c.surrogates.values():
        if hasattr(fr, "stats"):
            fr.stats.reset()
    times = []
    for step in range(repeats):
        t0 = time.perf_counter()
        bench.stage2_step(c, method, warmup + step, None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fr", default="mini", choices=["mini", "paper"])
    p.add_argument("--surrogates", nargs="+", default=["ir152", "irse50", "facenet"])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--enc-dim", type=int, default=8)
    p.add_argument("--enc-layers", type=int, default=3)
    p.add_argument("--fc-dim", type=int, default=16)
    p.add_argument("--noise", default="none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpus-per-actor", type=float, default=0.5)
    args = p.parse_args()

    import ray
    import ray.cloudpickle

    torch.set_num_threads(1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(bench)
    ray.init(num_cpus=max(2, int(len(args.surrogates) * args.cpus_per_actor + 1.999)), include_dashboard=False,
             log_to_driver=False)
    group = start_fr_actors({n: partial(one_surrogate, args.fr, n, args.size) for n in args.surrogates},
                            RemoteFRConfig(cpus_per_actor=args.cpus_per_actor, max_restarts=0))
    rows = []
    try:
        for method in ("ensemble", "meta_auxiliary"):
            c = bench.build(args)
            local_s = time_steps(c, method, args.warmup, args.repeats)
            c = bench.build(args)  # same initial weights and batch
            c.surrogates = {n: group.proxy(n) for n in args.surrogates}
            remote_s = time_steps(c, method, args.warmup, args.repeats)
            trips = sum(pr.stats.round_trips for pr in c.surrogates.values()) / args.repeats
            moved = sum(pr.stats.bytes_sent + pr.stats.bytes_received for pr in c.surrogates.values()) / args.repeats
            paper = moved * (256 * 256 * 8) / (args.size ** 2 * args.batch)
            rows.append({"method": method, "K": len(args.surrogates), "local_s": local_s, "remote_s": remote_s,
                         "ratio": remote_s / local_s, "round_trips_per_step": trips, "bytes_per_step": moved,
                         "projected_bytes_per_step_256px_batch8": paper,
                         "projected_transfer_s": {k: paper / bw for k, bw in LINKS.items()}})
    finally:
        group.shutdown()
        ray.shutdown()
    for r in rows:
        print(f"{r['method']:>15}: remote/local = {r['ratio']:.2f} ({r['remote_s'] * 1e3:.0f} ms / "
              f"{r['local_s'] * 1e3:.0f} ms), {r['round_trips_per_step']:.0f} round trips, "
              f"{r['bytes_per_step'] / 1e6:.2f} MB per step here; "
              f"{r['projected_bytes_per_step_256px_batch8'] / 1e6:.0f} MB per step at 256², batch 8")
        for link, s in r["projected_transfer_s"].items():
            print(f"{'':>17}{link}: {s * 1e3:.0f} ms of transfer per step")
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
