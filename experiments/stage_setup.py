"""What every curriculum stage builds from the config: data, AttGAN, protection models, FR models.

One place turns an :class:`ErasableMaskConfig` into objects, so the three
stages, the evaluation and the Ray runner build them identically.

Data roles in the mini-world (``data.kind = "miniworld"``):

- the world is ``MiniWorld(seed=cfg.seed, ...)`` with ``data.miniworld`` sizes
  at ``data.image_size``; the mini FR zoo is trained on the same world
  (:func:`zoo_world`), on identities ``[0, n - heldout)``;
- the generator is trained on the *train* split of those identities,
  validated per epoch on their *val* split and evaluated on their *test* split;
- the held-out identities ``[n - heldout, n)`` are never seen by the generator
  or the FR models: impersonation targets come from them
  (:mod:`erasablemask.experiments.targets`), and FR thresholds are calibrated on them.

Real data sets (``celebahq``, ``ffhq``, ``folder``): :func:`split_dataset`
returns the loaders of ``experiments/data/folders.py`` (same item dicts) at
``data.image_size``; every identity is a source identity, targets come from
``attack.target.mode = images`` and the FR models are real ones.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from erasablemask.experiments.config import ErasableMaskConfig
from erasablemask.experiments.data.attributes import sample_target_attributes, to_generator_input
from erasablemask.experiments.data.miniworld import MiniWorld
from erasablemask.models.attgan import AttGANDiscriminator, AttGANGenerator
from erasablemask.models.erasablemask import ErasableMaskGenerator, Restorer
from erasablemask.models.fr.registry import FaceRecognizer
from erasablemask.models.noise_pool import TrainingNoisePool

__all__ = [
    "build_world", "zoo_world", "source_identities", "heldout_identities", "split_dataset",
    "code_attributes", "sample_att_b", "build_generator", "build_discriminator", "build_protection",
    "build_restorer", "build_noise_pool", "build_fr_models", "freeze",
]

_WORLD_CACHE: dict[tuple, MiniWorld] = {}


def _check_miniworld(cfg: ErasableMaskConfig) -> None:
    if cfg.data.kind != "miniworld":
        raise ValueError(f"data.kind={cfg.data.kind!r} has no synthetic world; this needs data.kind=miniworld")


def zoo_world(cfg: ErasableMaskConfig):
    """The :class:`~erasablemask.experiments.fr_mini.MiniZooWorld` of this config (same world, same held-out ids)."""
    from erasablemask.experiments.fr_mini import MiniZooWorld

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


def code_attributes(att01: torch.Tensor, cfg: ErasableMaskConfig) -> torch.Tensor:
    """0/1 labels -> generator input code (``data.attribute_coding``)."""
    return to_generator_input(att01, cfg.data.attribute_coding)


def sample_att_b(att_a01: torch.Tensor, cfg: ErasableMaskConfig, generator: torch.Generator) -> torch.Tensor:
    """Training ``att_b`` (``stage1.att_b_sampling``): "shuffle" permutes att_a across the batch
    (AttGAN-PyTorch); "flip" flips each attribute with probability ``stage1.att_b_flip_prob`` and
    resolves conflicts."""
    mode = "permute" if cfg.stage1.att_b_sampling == "shuffle" else "flip_random"
    return sample_target_attributes(att_a01, generator, mode=mode, p_flip=cfg.stage1.att_b_flip_prob)


def build_generator(cfg: ErasableMaskConfig) -> AttGANGenerator:
    """AttGAN G (G_enc + G_dec) with ``model.*`` sizes at ``data.image_size``."""
    m = cfg.model
    return AttGANGenerator(enc_dim=m.enc_dim, enc_layers=m.enc_layers, dec_dim=m.dec_dim, dec_layers=m.dec_layers,
                           shortcut_layers=m.shortcut_layers, inject_layers=m.inject_layers,
                           n_attrs=len(m.attributes), img_size=cfg.data.image_size)


def build_discriminator(cfg: ErasableMaskConfig) -> AttGANDiscriminator:
    """AttGAN D (D_G + D_att) with ``model.dis_*`` sizes at ``data.image_size``."""
    m = cfg.model
    return AttGANDiscriminator(dim=m.dis_dim, n_layers=m.dis_layers, n_attrs=len(m.attributes),
                               img_size=cfg.data.image_size, fc_dim=m.dis_fc_dim)


def build_protection(cfg: ErasableMaskConfig, generator: AttGANGenerator) -> ErasableMaskGenerator:
    """E_adv (initialised from G_enc) around the frozen ``generator`` (β, γ, BN mode from ``protection``)."""
    p = cfg.protection
    return ErasableMaskGenerator(generator, beta=p.beta, gamma=p.gamma, gamma_weights=p.gamma_weights,
                                 inject=p.inject, perturbation_bn=p.perturbation_bn)


def build_restorer(cfg: ErasableMaskConfig, generator: AttGANGenerator) -> Restorer:
    """R initialised from G (``protection.restorer_attribute_input``)."""
    return Restorer.from_generator(generator, attribute_input=cfg.protection.restorer_attribute_input)


def build_noise_pool(cfg: ErasableMaskConfig) -> TrainingNoisePool:
    """The training noise pool (§IV-D) from ``noise_pool.*``."""
    n = cfg.noise_pool
    return TrainingNoisePool(jpeg_quality=n.jpeg_quality, jpeg_mode=n.jpeg_mode,
                             gaussian_variance=n.gaussian_variance, resize_factor=n.resize_factor,
                             layers=n.layers, per=n.per)


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode."""
    return module.requires_grad_(False).eval()


def build_fr_models(cfg: ErasableMaskConfig, names: list[str], device: torch.device | str = "cpu",
                    *, progress: bool = True) -> dict[str, FaceRecognizer]:
    """Frozen FR models by registry name; ``mini_*`` ones are trained/calibrated on this config's world first."""
    from erasablemask.models.fr import build

    minis = [n for n in names if n.startswith("mini_")]
    if minis:
        if cfg.data.kind != "miniworld":
            raise ValueError(f"FR models {minis} are mini-world models; with data.kind={cfg.data.kind!r} "
                             f"use real FR models in attack.surrogates / attack.black_box")
        from erasablemask.experiments.fr_mini import ensure_mini_zoo

        ensure_mini_zoo(minis, zoo_world(cfg), progress=progress)
    return {n: freeze(build(n)).to(device) for n in names}
