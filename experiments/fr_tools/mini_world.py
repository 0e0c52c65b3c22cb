"""The mini-world a mini FR zoo is trained on, and the disjoint roles of its identities.

Roles (identity ranges of one seed; identity ``k`` of a mini-world does not
depend on how many identities it has, so one *population world* of
``n + extra + calibration`` identities renders them all):

==================  ==========================================  =========================================
role                identities                                  used by
==================  ==========================================  =========================================
``source``          ``[0, n - heldout)``                        the generator (train/val/test splits); the
                                                                FR population sees their *train* images
                                                                only (``source_train_images``)
``target``          ``[n - heldout, n)``                        impersonation targets; nothing else
``fr_only``         ``[n, n + extra)``                          the FR population (first
                                                                ``extra_images_per_identity`` images):
                                                                the paper's MS1M/CASIA stand-in
``calibration``     ``[n + extra, n + extra + calibration)``    FR thresholds at FAR 0.1/0.01/0.001;
                                                                nothing else
==================  ==========================================  =========================================

No source val/test image, no target and no calibration identity is ever in
an FR model's training data (:func:`training_data` checks it), so ASR/ESR
pairs (a protected source test face against a target's photo) are
unseen-vs-unseen pairs, like the calibration pairs the thresholds were set
on. The calibration set has every pair of its
``calibration * calibration_images_per_identity`` images (default 24 × 12:
39,744 impostor pairs, ≥ 10,000 so FAR 0.001 rests on ≥ 40 false accepts).
:func:`check_disjoint_roles` is the one check; it refuses any role
assignment that overlaps (also used for real data sets,
:func:`erasablemask.experiments.data.splits.check_roles`).

A :class:`MiniZooWorld` is a plain frozen value: pass it (or the config it
comes from, :func:`erasablemask.experiments.data.splits.zoo_world`) to
whatever builds a mini model, in any process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from erasablemask.experiments.data.miniworld import MiniWorld

__all__ = [
    "MiniZooWorld",
    "check_disjoint_roles",
    "population_world",
    "image_indices",
    "source_split_indices",
    "fr_training_indices",
    "training_data",
    "calibration_set_id",
    "heldout_calibration_set",
]

MIN_IMPOSTOR_PAIRS = 10_000  # FAR 0.001 rests on >= 10 false accepts


def check_disjoint_roles(roles: Mapping[str, Iterable], what: str = "identities") -> None:
    """Refuse role assignments that share a member (identities, or image indices).

    Args:
        roles: ``{role: members}``.
        what: what the members are, for the message.

    Raises:
        ValueError: two roles share members (names both roles and up to 5 members).
    """
    sets = {r: set(m) for r, m in roles.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sets[a] & sets[b]
            if common:
                shown = sorted(common)[:5]
                raise ValueError(
                    f"roles '{a}' and '{b}' share {len(common)} {what} (e.g. {shown}); every role "
                    f"must use its own {what}: fix the split sizes (data.miniworld.*) or the data "
                    f"set's identity columns"
                )


@dataclass(frozen=True)
class MiniZooWorld:
    """The mini-world a zoo is trained on, its FR population, its calibration set and an optional epochs override.

    Attributes:
        seed: world seed (``MiniWorld(seed=...)``).
        n_identities: identities in the world (sources + targets).
        images_per_identity: images per identity.
        heldout_identities: the world's last identities: impersonation targets only.
        image_size: rendered image side (pixels).
        extra_identities: FR-only identities beyond the world (module doc).
        extra_images_per_identity: images used of each FR-only identity.
        calibration_identities: identities used only to calibrate FR thresholds.
        calibration_images_per_identity: images of each calibration identity.
        source_train_images: the FR population also holds the source identities' train-split images.
        skin_texture: each identity's fine skin texture, std in 0-255 levels (``MiniWorld``; 0: none).
        skin_texture_scale: its correlation length in face-coordinate units.
        epochs: overrides every recipe's epochs when set (tests, quick runs).
    """

    seed: int = 0
    n_identities: int = 48
    images_per_identity: int = 24
    heldout_identities: int = 8
    image_size: int = 64
    extra_identities: int = 160
    extra_images_per_identity: int = 12
    calibration_identities: int = 24
    calibration_images_per_identity: int = 12
    source_train_images: bool = True
    skin_texture: float = 0.0
    skin_texture_scale: float = 0.025
    epochs: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.heldout_identities <= self.n_identities - 2:
            raise ValueError(
                f"heldout_identities={self.heldout_identities} must leave >= 2 source identities and be >= 2 "
                f"targets (n_identities={self.n_identities}); change data.miniworld"
            )
        if self.extra_identities < 0 or (self.extra_identities and self.extra_images_per_identity < 2):
            raise ValueError(
                f"extra_identities={self.extra_identities} must be >= 0 and extra_images_per_identity="
                f"{self.extra_images_per_identity} >= 2 (an identity needs two images to be learned)"
            )
        if self.calibration_identities < 2 or self.calibration_images_per_identity < 2:
            raise ValueError(
                f"calibration_identities={self.calibration_identities} and calibration_images_per_identity="
                f"{self.calibration_images_per_identity} must be >= 2 (genuine and impostor pairs); change "
                f"data.miniworld.fr_calibration_*"
            )
        if not self.source_train_images and self.extra_identities < 2:
            raise ValueError(
                "an FR population needs >= 2 identities: raise data.miniworld.fr_extra_identities "
                "or set data.miniworld.fr_source_train_images=true"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1 (or None for each recipe's own)")
        check_disjoint_roles(self.roles)

    @property
    def roles(self) -> dict[str, list[int]]:
        """``{role: identities}`` (module doc); the FR population's source identities are in ``source``."""
        n, h, e, c = self.n_identities, self.heldout_identities, self.extra_identities, self.calibration_identities
        return {
            "source": list(range(n - h)),
            "target": list(range(n - h, n)),
            "fr_only": list(range(n, n + e)),
            "calibration": list(range(n + e, n + e + c)),
        }

    @property
    def train_identities(self) -> list[int]:
        """Identities of the FR population: the sources (train images only, if used), then the FR-only ones."""
        r = self.roles
        return (r["source"] if self.source_train_images else []) + r["fr_only"]

    @property
    def heldout(self) -> list[int]:
        """The target identities (never trained on, never calibrated on)."""
        return self.roles["target"]

    @property
    def calibration(self) -> list[int]:
        """The calibration identities."""
        return self.roles["calibration"]

    @property
    def n_impostor_pairs(self) -> int:
        """Impostor pairs of the calibration set (every pair of its images of two identities)."""
        c, k = self.calibration_identities, self.calibration_images_per_identity
        return c * (c - 1) // 2 * k * k

    @property
    def _per(self) -> int:
        return max(self.images_per_identity, self.extra_images_per_identity, self.calibration_images_per_identity)


_WORLDS: dict[MiniZooWorld, MiniWorld] = {}  # memo of the pure function population_world (one world)
_SPLITS: dict[tuple, MiniWorld] = {}


def population_world(world: MiniZooWorld) -> MiniWorld:
    """The rendered world holding every role's identities (one kept in memory).

    It has ``n + extra + calibration`` identities of the largest per-role
    image count; use :func:`image_indices` to pick the images a role uses.
    """
    key = replace(world, epochs=None)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = MiniWorld(
            seed=world.seed,
            n_identities=world.n_identities + world.extra_identities + world.calibration_identities,
            images_per_identity=world._per,
            image_size=world.image_size,
            skin_texture=world.skin_texture,
            skin_texture_scale=world.skin_texture_scale,
        )
    return _WORLDS[key]


def _source_world(world: MiniZooWorld) -> MiniWorld:
    """The generator's world (its train/val/test split of each source identity); nothing is rendered."""
    key = (world.seed, world.n_identities, world.images_per_identity, world.image_size)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = MiniWorld(
            seed=world.seed,
            n_identities=world.n_identities,
            images_per_identity=world.images_per_identity,
            image_size=world.image_size,
        )
    return _SPLITS[key]


def _count(world: MiniZooWorld, k: int) -> int:
    if k < world.n_identities:
        return world.images_per_identity
    if k < world.n_identities + world.extra_identities:
        return world.extra_images_per_identity
    return world.calibration_images_per_identity


def image_indices(world: MiniZooWorld, identities: Sequence[int]) -> list[int]:
    """Indices into :func:`population_world` of every image of ``identities`` that their role uses."""
    per = world._per
    return [k * per + j for k in identities for j in range(_count(world, k))]


def _to_population(world: MiniZooWorld, world_indices: Iterable[int]) -> list[int]:
    ipi, per = world.images_per_identity, world._per
    return [(i // ipi) * per + i % ipi for i in world_indices]


def source_split_indices(world: MiniZooWorld, split: str) -> list[int]:
    """Indices into :func:`population_world` of the source identities' images of the generator's ``split``."""
    return _to_population(world, _source_world(world).indices(split, world.roles["source"]))


def fr_training_indices(world: MiniZooWorld) -> list[int]:
    """Indices into :func:`population_world` of the FR population's images, checked against every other role.

    Raises:
        ValueError: an image of a source's val/test split, of a target or of
            a calibration identity would be trained on (cannot happen with
            the ranges above; the check keeps it so).
    """
    r = world.roles
    src_train = source_split_indices(world, "train") if world.source_train_images else []
    idx = src_train + image_indices(world, r["fr_only"])
    held_out_images = (
        source_split_indices(world, "val")
        + source_split_indices(world, "test")
        + image_indices(world, r["target"])
        + image_indices(world, r["calibration"])
    )
    check_disjoint_roles({"FR training": idx, "source val/test, target, calibration": held_out_images}, "images")
    return idx


def training_data(world: MiniZooWorld) -> tuple[Tensor, Tensor]:
    """The FR population's images ``(N, 3, H, W)`` in [-1, 1] and class labels ``(N,)``."""
    idx = fr_training_indices(world)
    pop = population_world(world)
    label_of = {k: c for c, k in enumerate(world.train_identities)}
    return pop.images(idx), torch.tensor([label_of[i // pop.images_per_identity] for i in idx])


def calibration_set_id(world: MiniZooWorld) -> str:
    """Id of the calibration set of ``world`` (its calibration identities' images): ``miniworld-<16 hex>``.

    The digest covers the world (not the epochs override, which changes the
    weights, not the pairs) and the calibration identity list.
    """
    blob = {
        "world": asdict(replace(world, epochs=None)),
        "calibration": world.calibration,
        "images": world.calibration_images_per_identity,
    }
    return "miniworld-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


heldout_calibration_set = calibration_set_id  # the name callers used before calibration had its own identities
