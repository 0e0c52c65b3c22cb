"""The networks of ErasableMask built from the config, and loaded from a curriculum checkpoint.

One place turns an :class:`ErasableMaskConfig` into AttGAN G and D, the
protection generator (E_adv with β-fusion and γ-injection), the restorer R
and the training noise pool, so the three stages, the evaluation and the Ray
runner build them identically; :func:`load_protection_models` is the one
loader of those networks from a stage-1, -2 or -3 checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import Checkpoint
from erasablemask.models.attgan import AttGANDiscriminator, AttGANGenerator
from erasablemask.models.erasablemask import ErasableMaskGenerator, Restorer
from erasablemask.models.noise_pool import TrainingNoisePool

__all__ = [
    "build_generator", "build_discriminator", "build_protection", "build_restorer", "build_noise_pool", "freeze",
    "load_protection_models",
]


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


def load_protection_models(cfg: ErasableMaskConfig, prev: Checkpoint, device: torch.device
                           ) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module]:
    """``(G, D, protector, restorer)`` on ``device`` from a stage-1 or later checkpoint.

    From stage 1: G and D loaded; E_adv is G_enc's copy and R is G's copy (§IV-D).
    From stage 2 or 3: E_adv and R are loaded too. G is frozen in every case.
    """
    G = build_generator(cfg)
    prev.load_module("generator", G)
    D = build_discriminator(cfg)
    prev.load_module("discriminator", D)
    G.to(device)
    protector = build_protection(cfg, G).to(device)  # freezes G in place; E_adv = copy of G_enc
    restorer = build_restorer(cfg, G).to(device)  # R = copy of G
    if prev.stage >= 2:
        prev.load_module("protector", protector)
        prev.load_module("restorer", restorer)
    return G, D.to(device), protector, restorer
