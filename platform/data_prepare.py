"""``data prepare`` on Ray Data: raw photos -> detected, aligned 256² face crops + a parquet table + a report.

The work per photo is :class:`~erasablemask.experiments.photos.prepare.PrepareFaces`
(detect, align the FFHQ / CelebA-HQ way, write the crop into its shard
folder). Here it runs as a Ray Data ``map_batches`` over an actor pool: each
actor builds the detector once and processes batches of paths; only the
metadata rows travel back to the driver (the crops are written by the actors
into the shared output folder, so the folder must be visible to every node:
a shared file system on a cluster).

Output folder:

- ``images/<shard>/<n>.png``: the crops (``SHARD_SIZE`` per shard folder);
- ``table.parquet``: one row per good photo: ``path`` (the crop, relative to
  the folder), ``source``, ``identity`` (int, -1 when unknown),
  ``identity_name``, the 13 attributes when the labels give them, ``score``,
  ``landmarks`` (10 floats, source pixels), ``crop_landmarks`` (10 floats,
  crop pixels), ``crop_box`` (the crop's four corners in the source: 8
  floats), ``source_width`` / ``source_height``;
- ``bad.csv``: every photo left out, with its reason (``unreadable``,
  ``no_face``, ``several_faces``, ``too_small``) and details;
- ``report.json``: counts by reason, seconds, images per second.

With attribute labels the folder is a data set as it stands:
``ImageFolderWithAttributes(out, out / "table.parquet")`` (``data.kind=folder``,
``data.root=out``, ``data.attr_file=out/table.parquet``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.folders import read_attribute_table
from erasablemask.experiments.data.labelled_images import attributes_to_01, posix_path
from erasablemask.experiments.photos.detect import DETECTORS
from erasablemask.experiments.photos.prepare import BAD_REASONS, PrepareFaces
from erasablemask.experiments.photos.protect import list_photos
from erasablemask.models.atomic_files import atomic_path, write_text_atomic

__all__ = ["PrepareReport", "prepare_faces"]


@dataclass
class PrepareReport:
    """What ``data prepare`` did."""

    out: Path
    n_images: int
    n_good: int
    bad: dict[str, int]
    seconds: float
    actors: int

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def _labels(labels: Path | None, raw: Path, sources: list[Path], identity_from_folder: bool) -> pd.DataFrame:
    """Per source photo: identity (int), identity_name and the 13 attributes where known."""
    rel = [p.relative_to(raw).as_posix() for p in sources]
    df = pd.DataFrame({"rel": rel})
    if identity_from_folder:
        df["identity_name"] = [Path(r).parent.as_posix() if "/" in r else "" for r in rel]
    if labels is not None:
        table = read_attribute_table(labels)
        col = next((c for c in ("path", "filename", "file", "image", "image_id", "name") if c in table.columns), None)
        if col is None:
            raise ValueError(f"labels '{labels}' need a path column (path, filename, ...) relative to the raw folder")
        table = table.assign(rel=[posix_path(v) for v in table[col]]).drop(columns=[col])
        attrs = [a for a in ATTRIBUTES if a in table.columns]
        if attrs and len(attrs) != len(ATTRIBUTES):
            raise ValueError(
                f"labels '{labels}' have {len(attrs)} of the 13 attributes; give all of {', '.join(ATTRIBUTES)} or none"
            )
        if attrs:
            table[list(ATTRIBUTES)] = attributes_to_01(
                table[list(ATTRIBUTES)].to_numpy(), f"'{labels}'", table["rel"].tolist()
            )
        keep = ["rel", *(["identity"] if "identity" in table.columns else []), *attrs]
        df = df.merge(table[keep], on="rel", how="left")
        if attrs and df[list(ATTRIBUTES)].isna().any().any():
            missing = df.loc[df[list(ATTRIBUTES)].isna().any(axis=1), "rel"].tolist()
            raise ValueError(
                f"labels '{labels}' have no row for {len(missing)} photo(s), e.g. {missing[:3]}; "
                f"add them or move them out of the raw folder"
            )
    if "identity" in df.columns:
        names = df["identity"].astype("string")
        df["identity_name"] = names.fillna("")
        df = df.drop(columns=["identity"])
    if "identity_name" in df.columns:
        known = sorted(n for n in df["identity_name"].unique() if n)
        ids = {n: i for i, n in enumerate(known)}
        df["identity"] = [ids.get(n, -1) for n in df["identity_name"]]
    else:
        df["identity_name"], df["identity"] = "", -1
    return df


def prepare_faces(
    raw: str | Path,
    out: str | Path,
    *,
    size: int = 256,
    labels: str | Path | None = None,
    identity_from_folder: bool = False,
    detector: str = "mtcnn",
    min_score: float = 0.9,
    min_face: float = 0.0,
    actors: int | None = None,
    batch_size: int = 16,
    address: str | None = None,
    cpus_per_actor: float = 1.0,
) -> PrepareReport:
    """Prepare a folder of raw photos on Ray Data (module docstring for the output).

    Args:
        raw: folder of raw photos (searched recursively).
        out: output folder (created; existing crops of the same names are replaced).
        size: crop side.
        labels: optional CSV/parquet with a path column (relative to ``raw``), ``identity`` and/or the 13 attributes.
        identity_from_folder: the photo's sub-folder names its identity (``raw/<identity>/<photo>``).
        detector: :data:`~erasablemask.experiments.photos.detect.DETECTORS`.
        min_score: detector confidence threshold.
        min_face: faces smaller than this (pixels) are refused as ``too_small``.
        actors: actor-pool size (default: the cluster's CPUs / ``cpus_per_actor``, at most one per batch).
        batch_size: photos per batch.
        address: Ray cluster to join (None: a local instance, unless this process is already connected).
        cpus_per_actor: CPUs each actor reserves.

    Raises:
        FileNotFoundError: ``raw`` is missing or holds no images.
        ValueError: bad options or labels (before anything runs).
    """
    import ray

    from erasablemask.platform.ray_session import ray_session

    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise FileNotFoundError(f"raw folder '{raw}' does not exist; pass the folder of raw photos")
    if detector not in DETECTORS:
        raise ValueError(f"detector '{detector}' is unknown; use one of {DETECTORS}")
    if size < 16 or batch_size < 1:
        raise ValueError(f"size={size} must be >= 16 and batch_size={batch_size} >= 1")
    sources = list_photos([raw])
    meta = _labels(Path(labels) if labels else None, raw, sources, identity_from_folder)
    out.mkdir(parents=True, exist_ok=True)
    items = [{"index": i, "path": str(p)} for i, p in enumerate(sources)]
    with ray_session(address=address):
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        n_actors = actors or max(1, int(total_cpus // cpus_per_actor))
        n_actors = max(1, min(n_actors, (len(items) + batch_size - 1) // batch_size))
        start = time.perf_counter()
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), n_actors * 4)))
        rows = ds.map_batches(
            PrepareFaces,
            fn_constructor_kwargs={
                "out_dir": str(out.resolve()),
                "size": size,
                "detector": detector,
                "min_score": min_score,
                "min_face": min_face,
            },
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=n_actors,
            num_cpus=cpus_per_actor,
        ).to_pandas()
        seconds = time.perf_counter() - start
    rows = rows.sort_values("index").reset_index(drop=True)
    rows = pd.concat([rows, meta.drop(columns=["rel"])], axis=1)
    good = rows[rows["status"] == "ok"]
    bad = rows[rows["status"] != "ok"]
    attr_cols = [a for a in ATTRIBUTES if a in good.columns]
    table = pd.DataFrame(
        {
            "path": good["path"].astype(str),
            "source": good["source"].astype(str),
            "identity": good["identity"].astype(np.int64),
            "identity_name": good["identity_name"].astype(str),
            **{a: good[a].astype(np.int64) for a in attr_cols},
            "score": good["score"].astype(float),
            "landmarks": [list(map(float, v)) for v in good["landmarks"]],
            "crop_landmarks": [list(map(float, v)) for v in good["crop_landmarks"]],
            "crop_box": [list(map(float, v)) for v in good["crop_box"]],
            "source_width": good["width"].astype(np.int64),
            "source_height": good["height"].astype(np.int64),
        }
    )
    with atomic_path(out / "table.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / "bad.csv") as tmp:
        bad[["source", "reason", "detail"]].to_csv(tmp, index=False)
    counts = {r: int((bad["reason"] == r).sum()) for r in BAD_REASONS}
    report = PrepareReport(out, len(rows), len(good), counts, seconds, n_actors)
    write_text_atomic(
        out / "report.json",
        json.dumps(
            {
                "raw": str(raw),
                "size": size,
                "detector": detector,
                "min_score": min_score,
                "n_images": report.n_images,
                "n_good": report.n_good,
                "bad": counts,
                "seconds": round(seconds, 3),
                "actors": n_actors,
                "images_per_second": report.images_per_second,
            },
            indent=2,
        ),
    )
    return report
