"""``erasablemask data prepare RAW --out DIR``: the paper's MTCNN preprocessing on Ray Data (part of the ``data`` group).

Prints the counts (good, bad by reason), the throughput and where the table,
the list of bad photos and the report are. Bad photos are never fatal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from erasablemask.experiments.photos.detect import DETECTORS


def _prepare(args: argparse.Namespace) -> int:
    from erasablemask.platform.data_prepare import prepare_faces

    report = prepare_faces(
        args.raw,
        args.out,
        size=args.size,
        labels=args.labels,
        identity_from_folder=args.identity_from_folder,
        detector=args.detector,
        min_score=args.min_score,
        min_face=args.min_face,
        actors=args.actors,
        batch_size=args.batch_size,
        address=args.address,
    )
    bad = ", ".join(f"{k} {v}" for k, v in report.bad.items() if v) or "none"
    print(
        f"{report.n_images} photos -> {report.n_good} face crops in {report.out} ({report.n_images - report.n_good} "
        f"left out: {bad}); {report.seconds:.1f} s, {report.images_per_second:.2f} images/s on {report.actors} "
        f"actor(s)"
    )
    print(
        f"  table:  {report.out / 'table.parquet'}\n  bad:    {report.out / 'bad.csv'}\n"
        f"  report: {report.out / 'report.json'}"
    )
    return 0


def add_prepare(sub: argparse._SubParsersAction) -> None:
    """Add ``data prepare`` to the ``data`` group's sub-commands."""
    p = sub.add_parser("prepare", help="raw photos -> detected, aligned face crops + parquet table (Ray Data)")
    p.add_argument("raw", type=Path, help="folder of raw photos (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256, the paper's)")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV/parquet: a path column (relative to RAW), identity and/or the 13 attributes",
    )
    p.add_argument("--identity-from-folder", action="store_true", help="RAW/<identity>/<photo>: folder names identity")
    p.add_argument("--detector", default="mtcnn", choices=DETECTORS, help="face detector (default mtcnn, the paper's)")
    p.add_argument("--min-score", type=float, default=0.9, help="detector confidence threshold (default 0.9)")
    p.add_argument("--min-face", type=float, default=0.0, help="refuse faces smaller than this many pixels")
    p.add_argument("--actors", type=int, default=None, help="actor-pool size (default: one per CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="photos per batch (default 16)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local instance)")
    p.set_defaults(handler=_prepare)
