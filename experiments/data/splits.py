"""Which images play which role: the mini-world and its identity split, and the source-image splits.

Data roles in the mini-world (``data.kind = "miniworld"``):

- the world is ``MiniWorld(seed=cfg.seed, ...)`` with ``data.miniworld`` sizes
  at ``data.image_size``; the mini FR zoo is trained on the same world
  (:func:`zoo_world`), on identities ``[0, n - heldout)``;
- the generator is trained on the *train* split of those identities,
  validated per epoch on their *val* split and evaluated on their *test* split;
- the held-out identities ``[n - heldout, n)`` are never seen by the generator
  or the FR models: impersonation targets come from them
  (:mod:`erasablemask.experiments.evaluation.targets`), and FR thresholds are calibrated on them.

Real data sets (``celebahq``, ``ffhq``, ``folder``): :func:`split_dataset`
returns the loaders of ``experiments/data/folders.py`` (same item dicts) at
``data.image_size``; every identity is a source identity, targets come from
``attack.target.mode = images`` and the FR models are real ones.
"""

from __future__ import annotations

from typing import Literal

from torch.utils.data import Dataset

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.miniworld import MiniWorld

__all__ = ["zoo_world", "build_world", "source_identities", "heldout_identities", "split_dataset"]

_WORLD_CACHE: dict[tuple, MiniWorld] = {}


def _check_miniworld(cfg: ErasableMaskConfig) -> None:
    if cfg.data.kind != "miniworld":
        raise ValueError(f"data.kind={cfg.data.kind!r} has no synthetic world; this needs data.kind=miniworld")


def zoo_world(cfg: ErasableMaskConfig):
    """The :class:`~erasablemask.experiments.fr_tools.mini_world.MiniZooWorld` of this config (same world, same held-out ids).

    A pure function of the config: every process (driver, Ray actor, Tune
    trial) gets the same world, so mini FR models are built from explicit
    arguments, never from state left by earlier calls.
    """
    from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld

    m = cfg.data.miniworld
    return MiniZooWorld(seed=cfg.seed, n_identities=m.n_identities, images_per_identity=m.images_per_identity,
                        heldout_identities=m.heldout_identities, image_size=cfg.data.image_size,
                        extra_identities=m.fr_extra_identities,
                        extra_images_per_identity=m.fr_extra_images_per_identity, epochs=m.fr_epochs)


def build_world(cfg: ErasableMaskConfig) -> MiniWorld:
    """The mini-world of this config (rendered once per process and cached)."""
    _check_miniworld(cfg)
    m = cfg.data.miniworld
    key = (cfg.seed, m.n_identities, m.images_per_identity, cfg.data.image_size)
    if key not in _WORLD_CACHE:
        _WORLD_CACHE.clear()
        _WORLD_CACHE[key] = MiniWorld(seed=cfg.seed, n_identities=m.n_identities,
                                      images_per_identity=m.images_per_identity, image_size=cfg.data.image_size)
    return _WORLD_CACHE[key]


def source_identities(cfg: ErasableMaskConfig) -> list[int]:
    """Identities whose faces are protected: ``[0, n - heldout)``."""
    m = cfg.data.miniworld
    if m.heldout_identities >= m.n_identities:
        raise ValueError(f"data.miniworld.heldout_identities={m.heldout_identities} leaves no source identity "
                         f"of {m.n_identities}; lower it")
    return list(range(m.n_identities - m.heldout_identities))


def heldout_identities(cfg: ErasableMaskConfig) -> list[int]:
    """Identities reserved for targets and FR calibration: ``[n - heldout, n)``."""
    m = cfg.data.miniworld
    return list(range(m.n_identities - m.heldout_identities, m.n_identities))


def split_dataset(cfg: ErasableMaskConfig, split: Literal["train", "val", "test"]) -> Dataset:
    """Source images of ``split`` (items: image, attrs, identity (-1 if unknown), index)."""
    d = cfg.data
    if d.kind == "miniworld":
        return build_world(cfg).dataset(split, source_identities(cfg))
    from erasablemask.experiments.data import folders

    if d.attr_file is None:
        raise ValueError(f"data.attr_file is required for data.kind={d.kind!r}; set it to the attribute table")
    cls = {"celebahq": folders.CelebAHQ, "ffhq": folders.FFHQ, "folder": folders.ImageFolderWithAttributes}[d.kind]
    return cls(d.root, d.attr_file, split, size=d.image_size, mode_policy=d.mode_policy)
