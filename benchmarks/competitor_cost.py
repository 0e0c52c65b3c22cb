"""Cost of each protection scheme: wall time per protected image on the mini-world, as a ratio to FGSM (issue 13).

Every method of a comparison file (``experiments/configs/compare/``) is
built exactly as ``erasablemask compare`` builds it (same hyper-parameters,
same surrogates, same resources) and protects the same ``--images`` test
faces towards the same targets; the time of the ``protect`` call is taken
``--repeats`` times after one warm-up call on two images (imports, lazy
initialisation) and the median is divided by the image count. Per-image
optimisers (FGSM, PGD, Sibling-Attack, SemanticAdv) pay their optimisation
here; feed-forward methods (ErasableMask, AdvFaces and GMAA with a
``checkpoint``) only inference — their training cost is per epoch of their
stage (MLflow ``time/epoch_s`` of their stage runs), not measured here.

    python benchmarks/competitor_cost.py --run RUN_FOLDER                  # the demo run, the shipped comparison
    python benchmarks/competitor_cost.py --run RUN --images 4 --set methods.sibling.outer_loops=20

Prints one row per method: seconds per image, ratio to FGSM, and the
method's own count of surrogate forward+backward passes per image where it
has a fixed one (a check on the measured ratio).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _passes(name: str, hp: dict) -> int | None:
    """Forward+backward passes through the surrogate ensemble per image, where the method fixes it."""
    if name == "fgsm":
        return 1
    if name == "pgd":
        return int(hp["steps"])
    if name == "sibling":  # per outer loop: J inner steps, J aggregated gradients, 1 outer (half FR, half AR)
        return int(hp["outer_loops"]) * (2 * int(hp["inner_loops"]) + 1)
    if name == "semanticadv":
        return int(hp["steps"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default="miniworld", help="comparison file or shipped name")
    parser.add_argument("--run", default=None, help="ErasableMask run folder (erasablemask, SemanticAdv's G)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the comparison file (methods.pgd.steps=20)",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods")
    parser.add_argument("--images", type=int, default=8, help="test faces per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from erasablemask.experiments.config.compare import load_compare
    from erasablemask.experiments.evaluation.batches import evaluation_batches
    from erasablemask.experiments.evaluation.targets import build_targets, target_index_for
    from erasablemask.experiments.fr_tools.zoo import build_fr_models
    from erasablemask.platform.compare import MethodResources, build_method, experiment_config

    overrides = [*args.overrides, *([f"run={args.run}"] if args.run else [])]
    cmp = load_compare(args.compare, overrides).select(args.methods)
    cfg, run = experiment_config(cmp)
    models = build_fr_models(cfg, list(cfg.attack.surrogates), "cpu", progress=True)
    surrogates = [models[n] for n in cfg.attack.surrogates]
    batches = evaluation_batches(cfg, cmp.split, max_images=args.images)
    x = torch.cat([b.x for b in batches])[: args.images]
    att_a = torch.cat([b.att_a for b in batches])[: args.images]
    att_b = torch.cat([b.att_b for b in batches])[: args.images]
    index = torch.cat([b.index for b in batches])[: args.images]
    targets = build_targets(cfg)
    ti = target_index_for(index, len(targets.names))
    x_target = targets.train_images[ti] if ti is not None else targets.train_images[:1].expand_as(x)
    resources = MethodResources(cfg, run, Path(tempfile.mkdtemp(prefix="competitor_cost_")))

    rows = []
    for name, hp in cmp.methods.items():
        attack = build_method(name, hp, surrogates, resources)
        kw = dict(att_a=att_a, att_b=att_b)
        attack.protect(x[:2], x_target[:2], att_a=att_a[:2], att_b=att_b[:2])  # warm-up: imports, lazy init
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            attack.protect(x, x_target, **kw)
            times.append(time.perf_counter() - t0)
        per_image = statistics.median(times) / len(x)
        hparams = attack.hparams() if hasattr(attack, "hparams") else {}
        rows.append((name, per_image, _passes(name, hparams) if hparams else None))
        print(f"  {name:14s} {per_image:9.4f} s/image", flush=True)

    base = next((t for n, t, _ in rows if n == "fgsm"), None)
    print(
        f"\ncompetitor cost on {cfg.data.kind} {cfg.data.image_size}px, {len(x)} images per call, "
        f"{len(surrogates)} surrogates, median of {args.repeats}, {args.threads} thread(s):"
    )
    print(f"  {'method':14s} {'s/image':>9s} {'x FGSM':>9s} {'FR passes/image':>16s}")
    for name, t, passes in rows:
        ratio = f"{t / base:9.1f}" if base else f"{'-':>9s}"
        print(f"  {name:14s} {t:9.4f} {ratio} {passes if passes is not None else '-':>16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
