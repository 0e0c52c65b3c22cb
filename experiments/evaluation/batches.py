"""The fixed evaluation batches: source faces, their attributes, the edit asked of each, another photo of each.

For each source image ``x`` of the val or test split, ``att_b`` is a
single-attribute edit (AttGAN's test-time editing: one attribute flipped,
conflicts resolved) drawn with a seed derived from ``cfg.seed`` and the
split, so every evaluation of a run protects the same faces with the same
edits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attributes import sample_target_attributes
from erasablemask.experiments.data.splits import build_world, split_dataset
from erasablemask.experiments.seeding import derive_seed

__all__ = ["EVAL_BATCH", "EvalBatch", "evaluation_batches"]

EVAL_BATCH = 64


@dataclass
class EvalBatch:
    """A fixed evaluation batch: sources, their attributes, edits and another image of each source."""

    x: Tensor  # (N, 3, H, W) in [-1, 1]
    att_a: Tensor  # (N, n) 0/1
    att_b: Tensor  # (N, n) 0/1, one attribute flipped
    index: Tensor  # (N,) data-set indices (target assignment, the records' sample id)
    identity: Tensor  # (N,) source identities, -1 where unknown
    x_other: Tensor | None  # (N, 3, H, W): another image of the same identity (None: identities unknown)


def evaluation_batches(cfg: ErasableMaskConfig, split: Literal["val", "test"], max_images: int = 0
                       ) -> list[EvalBatch]:
    """The source images of ``split`` (first ``max_images``; 0 = all) in fixed batches.

    ``x_other`` is another image of each source identity: the identity's
    first other image, from any split (mini-world; real data sets whose table
    has an ``identity`` column). None for a batch with a source of unknown
    identity (-1) or without another image of it: no identity-restoration
    rate then.

    Raises:
        ValueError: the split has no source images.
    """
    world = build_world(cfg) if cfg.data.kind == "miniworld" else None
    ds = split_dataset(cfg, split)
    n = len(ds) if max_images == 0 else min(max_images, len(ds))
    if n == 0:
        raise ValueError(f"the {split} split has no source images; raise data.miniworld.images_per_identity")
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "eval_att_b", split))
    batches = []
    for start in range(0, n, EVAL_BATCH):
        items = [ds[i] for i in range(start, min(start + EVAL_BATCH, n))]
        att_a = torch.stack([it["attrs"] for it in items])
        x_other = None
        if world is not None:
            others = []
            for it in items:  # the identity's first other image, from any split
                same = world.indices(None, [it["identity"]])
                others.append(next(i for i in same if i != it["index"]))
            x_other = world.images(others)
        else:
            x_other = _other_photos(cfg, items)
        batches.append(EvalBatch(
            x=torch.stack([it["image"] for it in items]), att_a=att_a,
            att_b=sample_target_attributes(att_a, gen, mode="flip_one"),
            index=torch.tensor([it["index"] for it in items]),
            identity=torch.tensor([int(it.get("identity", -1)) for it in items], dtype=torch.long),
            x_other=x_other,
        ))
    return batches


_PHOTOS_OF: dict[tuple, dict[int, list[tuple[int, object, str]]]] = {}


def _other_photos(cfg: ErasableMaskConfig, items: list[dict]) -> Tensor | None:
    """Another photo of each item's identity from a real data set's identity column (None if any lacks one)."""
    if any(int(it.get("identity", -1)) < 0 for it in items):
        return None
    key = (cfg.data.kind, str(cfg.data.root), str(cfg.data.attr_file))
    if key not in _PHOTOS_OF:
        photos: dict[int, list[tuple[int, object, str]]] = {}
        for split in ("train", "val", "test"):
            ds = split_dataset(cfg, split)
            table = ds.table
            for index, ident, path in zip(table["index"], table["identity"], table["path"]):
                if ident >= 0:
                    photos.setdefault(int(ident), []).append((int(index), ds.root, path))
        _PHOTOS_OF.clear()
        _PHOTOS_OF[key] = photos
    photos = _PHOTOS_OF[key]
    chosen = []
    for it in items:
        other = next(((root, path) for index, root, path in sorted(photos.get(int(it["identity"]), []),
                                                                   key=lambda t: t[0]) if index != it["index"]), None)
        if other is None:
            return None
        chosen.append(other)
    from pathlib import Path

    from erasablemask.experiments.data.image_io import load_image_tensor

    return torch.stack([load_image_tensor(Path(root) / path, cfg.data.image_size, cfg.data.mode_policy)
                        for root, path in chosen])
