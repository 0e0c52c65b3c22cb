"""Impersonation targets (``attack.target``): one training image and a different evaluation image each.

The AMT-GAN convention (NOTES.md): the attack is trained against one image
of the target identity and evaluated against *another* image of the same
identity, so success means "verified as the target person", not "close to
one picture".

- ``mode="miniworld_heldout"``: ``count`` held-out mini-world identities
  (never seen by the generator or the mini FR models), chosen with a seed
  derived from ``cfg.seed``; the training image is the identity's first
  'train'-split image and the evaluation image its first 'test'-split image.
- ``mode="images"``: ``train_images[k]`` / ``eval_images[k]`` (paths), one pair per target.

Several targets: the generator is not conditioned on the target, so a model
trained for several targets pushes each source towards *its* target, the
source's target being fixed by its data-set index (``index mod count``,
DiffAM's split of the test images into one group per target). For the
AMT-GAN/CLIP2Protect protocol (one model per target) run the curriculum once
per target with ``count=1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from erasablemask.experiments.config import ErasableMaskConfig
from erasablemask.experiments.context import derive_seed
from erasablemask.models.checks import check_image_range

__all__ = ["ImpersonationTargets", "build_targets", "target_index_for"]


@dataclass
class ImpersonationTargets:
    """The targets of one run.

    Attributes:
        train_images: ``(T, 3, H, W)`` in [-1, 1], used by the attack in training.
        eval_images: ``(T, 3, H, W)`` in [-1, 1], another image of each target, used by ASR/ESR.
        names: one label per target (``"miniworld:id47"`` or the training image path).
    """

    train_images: Tensor
    eval_images: Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def target_index_for(sample_index: Tensor, count: int) -> Tensor | None:
    """Which target each sample impersonates (``index mod count``); None with a single target."""
    if count == 1:
        return None
    return (sample_index.long() % count).long()


def _load_image(path: Path, size: int) -> Tensor:
    if not Path(path).is_file():
        raise FileNotFoundError(f"target image '{path}' not found; fix attack.target.train_images/eval_images")
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def build_targets(cfg: ErasableMaskConfig) -> ImpersonationTargets:
    """The targets described by ``cfg.attack.target`` (see the module docstring).

    Raises:
        ValueError: more targets asked than held-out identities, or a held-out
            identity without both a train and a test image.
    """
    t = cfg.attack.target
    size = cfg.data.image_size
    if t.mode == "images":
        train = torch.stack([_load_image(p, size) for p in t.train_images])
        evals = torch.stack([_load_image(p, size) for p in t.eval_images])
        names = [str(p) for p in t.train_images]
    else:
        from erasablemask.experiments.stage_setup import build_world, heldout_identities

        pool = heldout_identities(cfg)
        if t.count > len(pool):
            raise ValueError(f"attack.target.count={t.count} but only {len(pool)} held-out identities exist; "
                             f"lower the count or raise data.miniworld.heldout_identities")
        rng = np.random.default_rng(derive_seed(cfg.seed, "targets"))
        chosen = sorted(int(k) for k in rng.choice(pool, size=t.count, replace=False))
        world = build_world(cfg)
        train_idx, eval_idx = [], []
        for k in chosen:
            tr, te = world.indices("train", [k]), world.indices("test", [k])
            if not tr or not te:
                raise ValueError(f"held-out identity {k} lacks a train or test image; raise "
                                 f"data.miniworld.images_per_identity")
            train_idx.append(tr[0])
            eval_idx.append(te[0])
        train, evals = world.images(train_idx), world.images(eval_idx)
        names = [f"miniworld:id{k}" for k in chosen]
    check_image_range(train, "target training images")
    check_image_range(evals, "target evaluation images")
    return ImpersonationTargets(train_images=train, eval_images=evals, names=names)
