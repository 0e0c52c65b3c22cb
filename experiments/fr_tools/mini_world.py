"""The mini-world a mini FR zoo is trained on: its FR population, held-out identities and calibration set.

FR population: the world's identities ``[0, n - heldout)`` (every image),
plus ``extra_identities`` identities ``[n, n + extra)`` of the same seed
that the world itself does not contain (their first
``extra_images_per_identity`` images). The extras play the part of the
paper's FR training sets (MS1M, CASIA), whose people are not CelebA-HQ's:
the generator never sees them. They exist because 40 identities are too few
for a face embedding that generalises to unseen people. Identity ``k`` of a
mini-world does not depend on how many identities it has, so the population
world's first ``n`` identities are exactly the world's.

The held-out identities ``[n - heldout, n)`` are never trained on; every
image of theirs forms the world's calibration set
(:func:`heldout_calibration_set`). A :class:`MiniZooWorld` is a plain frozen
value: pass it (or the config it comes from,
:func:`erasablemask.experiments.data.splits.zoo_world`) to whatever builds a
mini model, in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from erasablemask.experiments.data.miniworld import MiniWorld

__all__ = ["MiniZooWorld", "population_world", "image_indices", "training_data", "heldout_calibration_set"]


@dataclass(frozen=True)
class MiniZooWorld:
    """The mini-world a zoo is trained on, its FR population, and an optional epochs override.

    Attributes:
        seed: world seed (``MiniWorld(seed=...)``).
        n_identities: identities in the world.
        images_per_identity: images per identity.
        heldout_identities: the world's last identities; never trained on.
        image_size: rendered image side (pixels).
        extra_identities: FR-only identities beyond the world (see module doc).
        extra_images_per_identity: images used of each extra identity.
        epochs: overrides every recipe's epochs when set (tests, quick runs).
    """

    seed: int = 0
    n_identities: int = 48
    images_per_identity: int = 24
    heldout_identities: int = 8
    image_size: int = 64
    extra_identities: int = 160
    extra_images_per_identity: int = 12
    epochs: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.heldout_identities <= self.n_identities - 2:
            raise ValueError(
                f"heldout_identities={self.heldout_identities} must leave >= 2 identities for training and "
                f"be >= 2 for calibration (n_identities={self.n_identities}); change data.miniworld"
            )
        if self.extra_identities < 0 or (self.extra_identities and self.extra_images_per_identity < 2):
            raise ValueError(
                f"extra_identities={self.extra_identities} must be >= 0 and extra_images_per_identity="
                f"{self.extra_images_per_identity} >= 2 (an identity needs two images to be learned)"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1 (or None for each recipe's own)")

    @property
    def train_identities(self) -> list[int]:
        """FR population: the world's non-held-out identities, then the extras."""
        n = self.n_identities
        return list(range(n - self.heldout_identities)) + list(range(n, n + self.extra_identities))

    @property
    def heldout(self) -> list[int]:
        return list(range(self.n_identities - self.heldout_identities, self.n_identities))


_WORLDS: dict[MiniZooWorld, MiniWorld] = {}  # memo of the pure function population_world (one world)


def population_world(world: MiniZooWorld) -> MiniWorld:
    """The rendered world holding the FR population and the held-out identities (one kept in memory).

    It has ``n + extra`` identities of ``max(images_per_identity,
    extra_images_per_identity)`` images; use :func:`image_indices` to pick
    the images that belong to the population.
    """
    key = replace(world, epochs=None)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = MiniWorld(
            seed=world.seed,
            n_identities=world.n_identities + world.extra_identities,
            images_per_identity=max(world.images_per_identity, world.extra_images_per_identity),
            image_size=world.image_size,
        )
    return _WORLDS[key]


def image_indices(world: MiniZooWorld, identities: Sequence[int]) -> list[int]:
    """Indices into :func:`population_world` of the images of ``identities`` that the world uses."""
    per = max(world.images_per_identity, world.extra_images_per_identity)
    out = []
    for k in identities:
        count = world.images_per_identity if k < world.n_identities else world.extra_images_per_identity
        out += [k * per + j for j in range(count)]
    return out


def training_data(world: MiniZooWorld) -> tuple[Tensor, Tensor]:
    """The FR population's images ``(N, 3, H, W)`` in [-1, 1] and class labels ``(N,)``."""
    ids = world.train_identities
    idx = image_indices(world, ids)
    pop = population_world(world)
    label_of = {k: c for c, k in enumerate(ids)}
    return pop.images(idx), torch.tensor([label_of[i // pop.images_per_identity] for i in idx])


def heldout_calibration_set(world: MiniZooWorld) -> str:
    """Id of the calibration set of ``world``: its held-out identities, all images: ``miniworld-<16 hex>``.

    The digest covers the world (not the epochs override, which changes the
    weights, not the pairs) and the held-out identity list.
    """
    blob = {"world": asdict(replace(world, epochs=None)), "heldout": world.heldout, "images": "all"}
    return "miniworld-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
