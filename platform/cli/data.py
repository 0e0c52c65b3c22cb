"""``erasablemask data miniworld | check``: data sets from the shell.

- ``data miniworld --out DIR [--seed S --identities N --per-identity M --size PX]``:
  render the synthetic mini-world and write ``images/<identity>/<index>.png``,
  ``table.parquet`` (path, index, identity, 13 attributes, split) and
  ``grid.png`` (one row per identity).
- ``data check {celebahq,ffhq,folder} ROOT TABLE [--split S --decode]``:
  validate a real data set (files vs. rows, attribute columns) and, with
  ``--decode``, decode every image; prints counts and attribute prevalences.

Handlers return 0 on success and 2 on bad input (after printing the error).
"""

from __future__ import annotations

import argparse
import sys

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.folders import FFHQ, CelebAHQ, ImageFolderWithAttributes
from erasablemask.experiments.data.image_io import DataSetError
from erasablemask.experiments.data.miniworld import MiniWorld


def _fail(exc: BaseException) -> int:
    print(f"erasablemask data: error: {exc}", file=sys.stderr)
    return 2


def _miniworld(args: argparse.Namespace) -> int:
    try:
        world = MiniWorld(
            seed=args.seed,
            n_identities=args.identities,
            images_per_identity=args.per_identity,
            image_size=args.size,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            skin_texture=args.skin_texture,
        )
        out = world.write(args.out, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        return _fail(exc)
    counts = world.table["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    print(
        f"mini-world seed={world.seed}: {world.n_identities} identities x {world.images_per_identity} images "
        f"at {world.image_size}px -> {out} (train {counts['train']}, val {counts['val']}, test {counts['test']})"
    )
    print(f"  table: {out / 'table.parquet'}\n  grid:  {out / 'grid.png'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    split = None if args.split == "all" else args.split
    policies = {"missing": args.missing, "unlisted": args.unlisted}
    try:
        if args.kind == "celebahq":
            ds = CelebAHQ(args.root, args.table, args.split, size=None, mode_policy=args.mode_policy, **policies)
        elif args.kind == "ffhq":
            ds = FFHQ(args.root, args.table, split, size=None, mode_policy=args.mode_policy, **policies)
        else:
            ds = ImageFolderWithAttributes(args.root, args.table, split, size=None, mode_policy=args.mode_policy, **policies)
        if args.decode:
            ds.verify()
    except (DataSetError, ValueError, OSError) as exc:
        return _fail(exc)
    table = ds.table
    print(f"{args.kind} {args.root} split={args.split}: {len(ds)} images" + (" (all decoded)" if args.decode else ""))
    for name in ATTRIBUTES:
        print(f"  {name:20s} {table[name].mean():6.3f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group."""
    group = subparsers.add_parser("data", help="make or check data sets")
    sub = group.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    mw = sub.add_parser("miniworld", help="render the synthetic mini-world to a folder")
    mw.add_argument("--out", required=True, help="output folder (created if needed)")
    mw.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    mw.add_argument("--skin-texture", type=float, default=0.0,
                    help="std, in 0-255 levels, of each identity's fine skin texture (default 0: none; "
                         "config key data.miniworld.skin_texture)")
    mw.add_argument("--identities", type=int, default=48, help="number of identities (default 48)")
    mw.add_argument("--per-identity", type=int, default=24, help="images per identity (default 24)")
    mw.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    mw.add_argument("--val-fraction", type=float, default=0.1, help="share of each identity's images for val")
    mw.add_argument("--test-fraction", type=float, default=0.1, help="share of each identity's images for test")
    mw.add_argument("--quiet", action="store_true", help="no progress bar")
    mw.set_defaults(handler=_miniworld)

    ck = sub.add_parser("check", help="validate a real data set (CelebA-HQ, FFHQ or an image folder)")
    ck.add_argument("kind", choices=("celebahq", "ffhq", "folder"))
    ck.add_argument("root", help="image folder")
    ck.add_argument("table", help="CelebAMask-HQ-attribute-anno.txt (celebahq) or a CSV/parquet attribute table")
    ck.add_argument("--split", default="all", choices=("train", "val", "test", "all"))
    ck.add_argument("--mode-policy", default="convert", choices=("convert", "refuse"), help="non-RGB images")
    ck.add_argument("--missing", default="error", choices=("error", "drop"), help="rows without images")
    ck.add_argument("--unlisted", default="error", choices=("error", "ignore"), help="images without rows")
    ck.add_argument("--decode", action="store_true", help="decode every image (slow on large sets)")
    ck.set_defaults(handler=_check)

    from erasablemask.platform.cli.data_prepare import add_prepare

    add_prepare(sub)  # data prepare: platform/cli/data_prepare.py
