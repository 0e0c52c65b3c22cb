"""``erasablemask sweep SWEEP [--set key=value ...]``, ``sweep --resume DIR``, ``sweep --status DIR``.

``SWEEP`` is a sweep file (``experiments/config/sweep.py``: a base config,
a search space over dotted config keys, the objectives, how to search) or
the name of one in ``experiments/configs/sweeps/`` (``tiny``,
``fig5_gamma_beta``, ``lambda_adv_era``). The file is checked before Ray
starts; the work is :func:`erasablemask.platform.sweep.run_sweep`.
"""

from __future__ import annotations

import argparse

from erasablemask.experiments.config.sweep import load_sweep

__all__ = ["register"]


def _sweep(args: argparse.Namespace) -> int:
    from erasablemask.platform import sweep as sweeps

    if args.status:
        print("\n".join(sweeps.status_lines(args.status)))
        return 0
    if args.resume:
        result = sweeps.resume_sweep(args.resume, address=args.address)
    else:
        if not args.sweep:
            raise ValueError(
                "give a sweep file (or a shipped name: tiny, fig5_gamma_beta, lambda_adv_era), "
                "--resume DIR or --status DIR"
            )
        spec = load_sweep(args.sweep, args.overrides)  # every key and range checked before Ray starts
        if args.check:
            print(
                f"sweep file {args.sweep}: OK ({spec.name}, {len(spec.space)} keys, "
                f"{len(spec.objectives)} objective(s))"
            )
            return 0
        result = sweeps.run_sweep(spec, tracking_uri=args.tracking_uri, address=args.address)
    print("\n".join(sweeps.status_lines(result.root)))
    print(f"sweep folder: {result.root}  (trials.parquet, dataset/, tune/)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sweep``."""
    p = subparsers.add_parser("sweep", help="hyper-parameter sweep on Ray Tune + Optuna (trials run the pipeline)")
    p.add_argument("sweep", nargs="?", default=None, help="sweep YAML file or shipped name")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the sweep file (num_samples=2, storage=DIR, name=...)",
    )
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the sweep in DIR after a crash")
    p.add_argument("--status", default=None, metavar="DIR", help="show the trials of the sweep in DIR, best so far")
    p.add_argument("--check", action="store_true", help="only validate the sweep file")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite in the sweep folder)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local instance)")
    p.set_defaults(handler=_sweep)
