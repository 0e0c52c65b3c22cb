"""Impersonation targets (``attack.target``): one training image and a different evaluation image each.

The AMT-GAN convention (NOTES.md): the attack is trained against one image
of the target identity and evaluated against *another* image of the same
identity, so success means "verified as the target person", not "close to
one picture".

- ``mode="miniworld_heldout"``: ``count`` held-out mini-world identities
  (never seen by the generator or the mini FR models, and not the identities
  their thresholds were calibrated on); the evaluation image
  is the identity's first 'test'-split image. ``selection="seeded"``: the
  identities are drawn with a seed derived from ``cfg.seed`` and the training
  image is each one's first 'train'-split image. ``selection="typical"``: the
  attacker chooses with white-box knowledge only (the surrogates and the
  targets' train-split images, never a test image or a black-box model): the
  identities whose train images the surrogates verify most consistently
  (mean pairwise cosine minus the FAR-``asr_far`` threshold, averaged over
  surrogates) and, for each, the train image with the highest mean cosine to
  the identity's other train images. A target photo that does not look like
  its owner caps ASR (success is judged against *another* photo): on the
  mini-world the seeded choice can draw such a target.
- ``mode="images"``: ``train_images[k]`` / ``eval_images[k]`` (paths), one pair per target;
  none may be an image of the data set (:func:`~erasablemask.experiments.data.splits.check_roles`).

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
from torch import Tensor

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.image_io import ModePolicy, load_image_tensor
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.image_checks import check_image_range

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


def _load_image(path: Path, size: int, mode_policy: ModePolicy) -> Tensor:
    """A target photo, loaded exactly like the training photos (experiments/data/image_io.py)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"target image '{path}' not found; fix attack.target.train_images/eval_images")
    return load_image_tensor(path, size, mode_policy)


def build_targets(cfg: ErasableMaskConfig) -> ImpersonationTargets:
    """The targets described by ``cfg.attack.target`` (see the module docstring).

    Raises:
        ValueError: more targets asked than held-out identities, or a held-out
            identity without both a train and a test image.
    """
    from erasablemask.experiments.data.splits import check_roles

    check_roles(cfg)  # targets, sources, FR population and calibration identities never overlap
    t = cfg.attack.target
    size = cfg.data.image_size
    if t.mode == "images":
        train = torch.stack([_load_image(p, size, cfg.data.mode_policy) for p in t.train_images])
        evals = torch.stack([_load_image(p, size, cfg.data.mode_policy) for p in t.eval_images])
        names = [str(p) for p in t.train_images]
    else:
        from erasablemask.experiments.data.splits import build_world, heldout_identities

        pool = heldout_identities(cfg)
        if t.count > len(pool):
            raise ValueError(f"attack.target.count={t.count} but only {len(pool)} held-out identities exist; "
                             f"lower the count or raise data.miniworld.heldout_identities")
        world = build_world(cfg)
        for k in pool:
            if not world.indices("train", [k]) or not world.indices("test", [k]):
                raise ValueError(f"held-out identity {k} lacks a train or test image; raise "
                                 f"data.miniworld.images_per_identity")
        if t.selection == "typical":
            chosen, train_idx = _typical(cfg, world, pool, t.count)
        else:
            rng = np.random.default_rng(derive_seed(cfg.seed, "targets"))
            chosen = sorted(int(k) for k in rng.choice(pool, size=t.count, replace=False))
            train_idx = [world.indices("train", [k])[0] for k in chosen]
        eval_idx = [world.indices("test", [k])[0] for k in chosen]
        train, evals = world.images(train_idx), world.images(eval_idx)
        names = [f"miniworld:id{k}" for k in chosen]
    check_image_range(train, "target training images")
    check_image_range(evals, "target evaluation images")
    return ImpersonationTargets(train_images=train, eval_images=evals, names=names)


@torch.no_grad()
def _typical(cfg: ErasableMaskConfig, world, pool: list[int], count: int) -> tuple[list[int], list[int]]:
    """``selection="typical"``: identities and train images ranked with the surrogates on train-split images."""
    from erasablemask.experiments.fr_tools.zoo import build_fr_models

    surrogates = build_fr_models(cfg, list(cfg.attack.surrogates), progress=False)
    scores, best_image = {}, {}
    for k in pool:
        idx = world.indices("train", [k])
        if len(idx) < 2:
            raise ValueError(f"selection='typical' needs >= 2 train images of held-out identity {k}")
        images = world.images(idx)
        per_image = torch.zeros(len(idx))
        margin = 0.0
        for fr in surrogates.values():
            emb = fr(images)
            sims = emb @ emb.T
            mean_others = (sims.sum(1) - sims.diag()) / (len(idx) - 1)
            per_image += mean_others / len(surrogates)
            margin += (float(mean_others.mean()) - fr.threshold(cfg.evaluation.asr_far)) / len(surrogates)
        scores[k] = margin
        best_image[k] = idx[int(per_image.argmax())]
    chosen = sorted(sorted(pool, key=lambda k: -scores[k])[:count])
    return chosen, [best_image[k] for k in chosen]
