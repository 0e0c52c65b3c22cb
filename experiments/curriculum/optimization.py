"""Optimisation pieces shared by the stages: Adam from the config, and one discriminator step (Eq. 3-4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from erasablemask.experiments.curriculum.losses import (
    attribute_loss,
    discriminator_loss,
    gradient_penalty,
    stage1_discriminator_loss,
)
from erasablemask.experiments.devices import MixedPrecision

__all__ = ["adam", "discriminator_step"]


def adam(params, opt_cfg) -> torch.optim.Adam:
    """Adam with the config's lr and betas."""
    return torch.optim.Adam(params, lr=opt_cfg.lr, betas=tuple(opt_cfg.betas))


def discriminator_step(D_step: nn.Module, optimizer: torch.optim.Optimizer, real: Tensor, fake: Tensor,
                       att_a: Tensor, s1, rng: torch.Generator, mp: MixedPrecision | None = None
                       ) -> dict[str, float]:
    """One step of D on ``L_D + λ_att_D L_att^D`` (+ GP for wgan_gp), Eq. 3-4; real and fake in one D call.

    Args:
        D_step: D (possibly DDP-wrapped). optimizer: D's optimiser.
        real: ``x_cov^{att_a}``; fake: generated images (detached), both (N, 3, H, W) in [-1, 1].
        att_a: (N, n) 0/1 labels of ``real``. s1: the ``Stage1Config`` (GAN loss kind, λ_att_D, GP weight).
        rng: RNG of the gradient penalty's interpolation weights.
        mp: the trainer's precision (autocast of the forward passes, fp16 loss scaling); None: fp32.

    Returns:
        ``{"D/L_D", "D/L_att_D", ("D/L_gp"), "D/L_total"}``.
    """
    n = real.shape[0]
    mp = mp or MixedPrecision("fp32", real.device)
    with mp.autocast():
        d_g, d_att = D_step(torch.cat([real, fake]))
        l_D = discriminator_loss(d_g[:n], d_g[n:], kind=s1.gan_loss)
        l_att_D = attribute_loss(d_att[:n], att_a)
        gp = gradient_penalty(D_step, real, fake, generator=rng) if s1.gan_loss == "wgan_gp" else None
        total, logs = stage1_discriminator_loss(l_D=l_D, l_att_D=l_att_D, cfg=s1, gp=gp)
    mp.step(total, optimizer)
    return {f"D/{k}": v for k, v in logs.items()}
