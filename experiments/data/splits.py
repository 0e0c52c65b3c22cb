"""Which images play which role: the mini-world and its identity roles, real data sets, and the source-image splits.

Roles never overlap (one check,
:func:`~erasablemask.experiments.fr_tools.mini_world.check_disjoint_roles`):
the FR models' training population, the identities their thresholds are
calibrated on, the impersonation targets and the generator's source
identities.

Mini-world (``data.kind = "miniworld"``; identity ranges in
:mod:`erasablemask.experiments.fr_tools.mini_world`):

- the world is ``MiniWorld(seed=cfg.seed, ...)`` with ``data.miniworld`` sizes
  at ``data.image_size``; its source identities ``[0, n - heldout)`` are split
  per image into train/val/test: the generator trains on *train*, is
  validated on *val* and evaluated on *test*;
- the held-out identities ``[n - heldout, n)`` are the impersonation targets
  (:mod:`erasablemask.experiments.evaluation.targets`) and nothing else;
- the mini FR zoo (:func:`zoo_world`) trains on FR-only identities beyond the
  world plus, with ``data.miniworld.fr_source_train_images``, the source
  identities' *train* images (never a val or test image);
- FR thresholds are calibrated on calibration identities of their own
  (``data.miniworld.fr_calibration_*``; ≥ 10,000 impostor pairs).

Real data sets (``celebahq``, ``ffhq``, ``folder``): :func:`split_dataset`
returns the loaders of ``experiments/data/folders.py`` (same item dicts) at
``data.image_size``; every identity is a source identity, targets come from
``attack.target.mode = images`` and the FR models are real ones, trained
elsewhere (MS1M, CASIA, VGGFace2: their overlap with CelebA-HQ/FFHQ people
cannot be checked here). Thresholds are the published LFW ones or a
calibration set whose identities are disjoint from the test identities
(README, "Roles"). :func:`check_roles` refuses a target photo that is one
of the data set's own images (it would be a source identity's photo).
"""

from __future__ import annotations

from typing import Literal

from torch.utils.data import Dataset

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.miniworld import MiniWorld

__all__ = ["zoo_world", "build_world", "source_identities", "heldout_identities", "split_dataset", "check_roles"]

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
                        extra_images_per_identity=m.fr_extra_images_per_identity,
                        calibration_identities=m.fr_calibration_identities,
                        calibration_images_per_identity=m.fr_calibration_images_per_identity,
                        source_train_images=m.fr_source_train_images, skin_texture=m.skin_texture,
                        skin_texture_scale=m.skin_texture_scale, epochs=m.fr_epochs)


def build_world(cfg: ErasableMaskConfig) -> MiniWorld:
    """The mini-world of this config (rendered once per process and cached)."""
    _check_miniworld(cfg)
    m = cfg.data.miniworld
    key = (cfg.seed, m.n_identities, m.images_per_identity, cfg.data.image_size, m.skin_texture, m.skin_texture_scale)
    if key not in _WORLD_CACHE:
        _WORLD_CACHE.clear()
        _WORLD_CACHE[key] = MiniWorld(seed=cfg.seed, n_identities=m.n_identities,
                                      images_per_identity=m.images_per_identity, image_size=cfg.data.image_size,
                                      skin_texture=m.skin_texture, skin_texture_scale=m.skin_texture_scale)
    return _WORLD_CACHE[key]


def source_identities(cfg: ErasableMaskConfig) -> list[int]:
    """Identities whose faces are protected: ``[0, n - heldout)``."""
    m = cfg.data.miniworld
    if m.heldout_identities >= m.n_identities:
        raise ValueError(f"data.miniworld.heldout_identities={m.heldout_identities} leaves no source identity "
                         f"of {m.n_identities}; lower it")
    return list(range(m.n_identities - m.heldout_identities))


def heldout_identities(cfg: ErasableMaskConfig) -> list[int]:
    """Identities reserved as impersonation targets: ``[n - heldout, n)`` (never trained on, never calibrated on)."""
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


def check_roles(cfg: ErasableMaskConfig, dataset: Dataset | None = None) -> None:
    """Refuse a configuration whose roles overlap (module docstring).

    Mini-world: the :class:`MiniZooWorld` of the config checks its identity
    roles and the FR population's images. Real data with ``attack.target.mode
    = images``: no target photo may be an image of the data set (``dataset``:
    the loader of any split, or every split when None). Target photos carry
    no identity label here, so that a target person is not also a source
    person (under another file name) is the data set author's to ensure
    (README, "Roles").

    Raises:
        ValueError: two roles overlap (names them and the fix).
    """
    if cfg.data.kind == "miniworld":
        zoo_world(cfg)  # MiniZooWorld.__post_init__ runs check_disjoint_roles
        return
    if cfg.attack.target.mode != "images":
        return
    from pathlib import Path

    from erasablemask.experiments.fr_tools.mini_world import check_disjoint_roles

    splits = [dataset] if dataset is not None else [split_dataset(cfg, s) for s in ("train", "val", "test")]
    tables = [d.table for d in splits]
    source_paths = {str((Path(d.root) / p).resolve()) for d, t in zip(splits, tables) for p in t["path"]}
    target_paths = {str(Path(p).resolve()) for p in
                    list(cfg.attack.target.train_images) + list(cfg.attack.target.eval_images)}
    check_disjoint_roles({"source images": source_paths, "target photos (attack.target)": target_paths}, "images")
