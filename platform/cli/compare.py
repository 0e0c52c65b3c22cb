"""``erasablemask compare COMPARE [--methods ...] [--set key=value] [--out DIR] [--max-images N] [--no-track]``.

Runs every method of a comparison file (a YAML path or a shipped name in
``experiments/configs/compare/``; format in
:mod:`erasablemask.experiments.config.compare`) on the same images, targets,
FR models, thresholds and transforms (:mod:`erasablemask.platform.compare`),
as one MLflow parent run with a child run per method, and prints the Table
II-style table with 95 % identity-bootstrap intervals; ``--apis facepp tencent
aliyun`` adds Table III (commercial services' confidence and ASR on a seeded
subset of ``--api-max-images`` faces, credentials from the environment).
"""

from __future__ import annotations

import argparse

from erasablemask.platform.cli.args import add_commercial_api_arguments

__all__ = ["register"]


def _compare(args: argparse.Namespace) -> int:
    import torch

    from erasablemask.experiments.config.compare import load_compare
    from erasablemask.platform.compare import run_comparison
    from erasablemask.platform.tracking import where_lines

    cmp = load_compare(args.comparison, args.overrides).select(args.methods)  # checked before any work
    if args.max_images is not None and args.max_images < 0:
        raise ValueError(f"--max-images must be >= 0 (0: the whole split); got {args.max_images}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"erasablemask compare: {cmp.name}: {', '.join(cmp.methods)}", flush=True)
    result = run_comparison(
        cmp,
        out_dir=args.out,
        track=not args.no_track,
        max_images=args.max_images,
        apis=args.apis,
        api_max_images=args.api_max_images,
    )
    print(f"comparison ({result.n_images} {cmp.split} images per method):")
    print("\n".join(result.table))
    print(f"  files           {result.out_dir}  (comparison.csv, table.txt, <method>/records.parquet, rates.csv)")
    print("\n".join(where_lines(result.uri, result.parent_run_id)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare``."""
    p = subparsers.add_parser("compare", help="run several protection schemes on the same experiment, one table")
    p.add_argument("comparison", metavar="COMPARE", help="comparison YAML file or shipped name (e.g. miniworld)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="only these methods of the file, in this order (default: all of them)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the comparison file (run=DIR, methods.pgd.steps=20, "
        "overrides=[evaluation.max_images=16])",
    )
    p.add_argument("--out", default=None, help="output folder (default: RUN/comparisons/<name>-<UTC time>)")
    p.add_argument("--max-images", type=int, default=None, help="cap on source images (0: all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_commercial_api_arguments(p)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(handler=_compare)
