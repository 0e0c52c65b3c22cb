"""Mini-world FR zoo: quality per model and how far an attack on one model transfers.

    python benchmarks/mini_fr_zoo.py [--jobs 2] [--pairs 48] [--eps 16] [--steps 10] [--json OUT]

Trains (or loads from the cache) the whole default mini zoo, then prints

1. per model: parameters, training time, held-out AUC and TAR at each FAR;
2. an L∞ PGD impersonation attack (``eps`` in /255 units of the [-1, 1]
   range) on each model in turn, scored on every model at FAR 0.01, judged
   against the attacked target image itself and against another image of
   the target identity (the AMT-GAN convention); and the ratio of the mean
   transfer success to the white-box success, measured in the same run;
3. one PGD attack on the surrogate ensemble (the mini zoo's paper-like
   split), scored on every model.

Mini-world numbers, never the paper's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from erasablemask.experiments.fr_tools.mini_report import (
    format_transfer,
    impersonation_pairs,
    impersonation_transfer,
    pgd_impersonate,
    zoo_quality,
)
from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld, population_world
from erasablemask.experiments.fr_tools.mini_zoo import build_mini_model, ensure_mini_zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="models trained at once (processes)")
    parser.add_argument("--pairs", type=int, default=48, help="impersonation (source, target) pairs")
    parser.add_argument("--eps", type=float, default=16.0, help="L-inf budget in /255 of the [-1, 1] range")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--far", type=float, default=0.01, help="operating point of the success decision")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    world = MiniZooWorld()
    start = time.perf_counter()
    paths = ensure_mini_zoo(None, world, jobs=args.jobs, threads=1)
    print(f"zoo ready in {time.perf_counter() - start:.0f} s (cached models take ~0 s)\n")
    quality = zoo_quality(paths, world)
    fars = sorted({k for r in quality for k in r if k.startswith("tar@")}, reverse=True)
    print(f"{'model':<24}{'params':>9}{'train s':>9}{'cpu s':>8}{'AUC':>8}" + "".join(f"{f:>11}" for f in fars))
    for r in quality:
        print(
            f"{r['name']:<24}{r['params']:>9,}{r['train_seconds']:>9.0f}{r['train_cpu_seconds']:>8.0f}{r['auc']:>8.4f}"
            + "".join(f"{r[f]:>11.3f}" for f in fars)
        )

    torch.set_num_threads(1)
    models = {n: build_mini_model(n, world, progress=False) for n in paths}
    src, tgt, ev = impersonation_pairs(population_world(world), world.heldout, args.pairs, seed=0)
    eps = args.eps / 255
    results = {}
    for judged, targets in [("attacked target image", tgt), ("other image of the target", ev)]:
        m = impersonation_transfer(models, list(models), src, tgt, targets, far=args.far, eps=eps, steps=args.steps)
        white = sum(m[a][a] for a in models) / len(models)
        transfer = sum(m[a][b] for a in models for b in models if a != b) / (len(models) * (len(models) - 1))
        print(f"\nPGD eps {args.eps:g}/255, {args.steps} steps, success at FAR {args.far:g}, judged on the {judged}:")
        print(format_transfer(m))
        ratio = transfer / max(white, 1e-9)
        print(f"mean white-box {white:.3f}, mean transfer {transfer:.3f}, ratio transfer/white-box {ratio:.3f}")
        results[judged] = {"matrix": m, "white_box": white, "transfer": transfer}
    # The paper's setting in miniature: one attack on the surrogate ensemble, scored on the black-box models.
    surrogates = ["mini_iresnet_arc_s0", "mini_irse_cos_s0", "mini_incept_arc_s0"]
    x_adv = pgd_impersonate([models[n] for n in surrogates], src, tgt, eps=eps, steps=args.steps)
    with torch.no_grad():
        ensemble = {
            n: float(((m(x_adv) * m(tgt)).sum(1) > m.threshold(args.far)).float().mean()) for n, m in models.items()
        }
    print(f"\nPGD on the ensemble {surrogates}, judged on the attacked target image:")
    print("  ".join(f"{n} {v:.2f}" for n, v in ensemble.items()))
    results["ensemble of surrogates"] = ensemble
    if args.json:
        args.json.write_text(json.dumps({"quality": quality, "transfer": results}, indent=2))


if __name__ == "__main__":
    main()
