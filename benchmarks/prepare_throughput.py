"""Throughput of ``data prepare``: images per second per core, on Ray Data against the same work in one process.

The photos of ``../shared/faces/images`` (147 photos, longer side <= 512 px)
are prepared three ways: :class:`PrepareFaces` called in this process (the
baseline: no Ray), and :func:`prepare_faces` on a local Ray instance with 1
and with N actors (one CPU each). Each line gives images/s, images/s per
core and the ratio to the baseline; start-up (Ray, actors loading MTCNN) is
inside the Ray timings, so small sets understate the steady state.

Run: ``.venv/bin/python benchmarks/prepare_throughput.py [FACES_DIR] [--actors N] [--limit K]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    import ray

    from erasablemask.experiments.photos.prepare import PrepareFaces
    from erasablemask.platform.data_prepare import prepare_faces

    ap = argparse.ArgumentParser()
    ap.add_argument("faces", nargs="?", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "faces")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first K photos (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="prepare_bench_"))
    raw = tmp / "raw"
    photos = sorted((args.faces / "images").rglob("*.*"))
    photos = photos[: args.limit] if args.limit else photos
    for p in photos:  # a private copy in a temporary folder, deleted at the end
        dst = raw / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    n = len(photos)
    try:
        worker = PrepareFaces(str(tmp / "base"), size=256)
        start = time.perf_counter()
        paths = np.array([str(raw / p.parent.name / p.name) for p in photos])
        for i in range(0, n, 16):
            worker({"index": np.arange(i, min(n, i + 16)), "path": paths[i : i + 16]})
        base = n / (time.perf_counter() - start)
        print(f"{n} photos; in one process (1 core, detector already loaded): {base:.2f} images/s")
        ray.init(num_cpus=args.actors, include_dashboard=False)
        try:
            for actors in sorted({1, args.actors}):
                rep = prepare_faces(raw, tmp / f"ray{actors}", size=256, actors=actors, batch_size=8)
                rate = rep.images_per_second
                print(
                    f"Ray Data, {actors} actor(s): {rate:.2f} images/s, {rate / actors:.2f} per core "
                    f"({rate / base:.2f}x the one-process rate; {rep.n_good} crops, bad {rep.bad})"
                )
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
