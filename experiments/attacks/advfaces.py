"""AdvFaces (Deb, Zhang, Jain, IJCB 2020): a generator of additive perturbations, trained, then feed-forward.

Official code: ``ronny3050/AdvFaces`` (TF 1.14; ``advfaces.py``, ``architectures/advfaces.py``,
``config/default.py``; competitors.md §5). Target mode: ``δ = G(x, x_target)`` (6-channel input),
``x_adv = 2·clip((x+1)/2 + δ, 0, 1) − 1`` (:mod:`erasablemask.models.competitors.advfaces`).
Per training step, as the official loss:

- ``L_D = BCE(D(x), 1) + BCE(D(x_adv), 0)`` (PatchGAN logits);
- ``L_G = L_GAN + λ_id·L_id + λ_p·L_pert`` with ``L_GAN = BCE(D(x_adv), 1)`` (non-saturating),
  ``L_id = mean[1 − (cos(F(x_adv), F(x_t)) + 1)/2]`` (target mode) and the hinge
  ``L_pert = mean_i max(0, ‖δ_i‖₂ − ε)`` (δ in [0, 1]-image units).

Adaptation (documented deviations, competitors.md §5 "Adaptation"):

- ``L_id`` is averaged over the run's white-box surrogates (``attack.surrogates``; the
  official matcher is one FaceNet);
- the targets are the run's (``attack.target``, the sample's target fixed by its index, as
  ErasableMask's stage 2), not a random other identity per image; the 6-channel input is
  kept, so one generator serves several targets and the attack uses the ``x_target`` it
  is given;
- the hinge ε is stated at the official resolution (3.0 at 160×160) and scaled with the
  image side: an L2 norm grows with the square root of the pixel count, so
  ``ε_H = ε · sqrt(H·W) / 160`` (1.2 at 64×64, 4.8 at 256×256);
- G and D are updated one after the other on the same ``x_adv`` (the official graph updates
  them in one session call); D sees real and fake in one batch (one forward, as DDP needs);
- an "epoch" is one pass over the training split (officially 200 iterations).

The returned faces are rounded to 8 bits (what a saved image holds). AdvFaces has no ε-ball:
the hinge is a soft L2 budget, so the output is not projected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.experiments.attacks.base import ensemble_cos_loss, quantise_8bit
from erasablemask.experiments.attacks.generator_base import (
    GeneratorAttack,
    GeneratorTrainer,
    build_generator_attack,
)
from erasablemask.experiments.attacks.registry import register
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.models.competitors.advfaces import AdvFacesDiscriminator, AdvFacesGenerator, apply_perturbation

__all__ = ["AdvFaces", "AdvFacesTrainer", "build_advfaces", "hinge_epsilon"]

OFFICIAL_SIDE = 160  # AdvFaces trains at 160x160 (FaceNet's input)


def hinge_epsilon(eps_at_160: float, height: int, width: int) -> float:
    """The L2 hinge ε at ``height × width``: ``eps_at_160 · sqrt(H·W) / 160`` (module docstring)."""
    return eps_at_160 * math.sqrt(height * width) / OFFICIAL_SIDE


@dataclass(eq=False)
class AdvFaces(GeneratorAttack):
    """AdvFaces in target mode: ``x_adv = x + G(x, x_target)`` (module docstring).

    Defaults: ``config/default.py`` and ``architectures/advfaces.py`` of ``ronny3050/AdvFaces``.
    """

    name: ClassVar[str] = "advfaces"

    gen_dim: int = 64  # architectures/advfaces.py: first conv 64 filters
    gen_res_blocks: int = 3  # architectures/advfaces.py: 3 residual blocks
    dis_dim: int = 32  # architectures/advfaces.py: discriminator 32 -> 512
    dis_layers: int = 5  # architectures/advfaces.py: 5 stride-2 convs
    lambda_id: float = 10.0  # config/default.py: idt_loss_factor
    lambda_pert: float = 1.0  # config/default.py: perturb_loss_factor
    pert_eps: float = 3.0  # config/default.py: MAX_PERTURBATION (L2, [0, 1] units, at 160x160; scaled by size)
    lr: float = 1e-4  # config/default.py: lr
    beta1: float = 0.5  # advfaces.py: Adam beta1
    beta2: float = 0.9  # advfaces.py: Adam beta2
    batch_size: int = 32  # config/default.py: batch_size
    epochs: int = 500  # config/default.py: num_epochs (officially of 200 iterations; ours: passes over the split)

    generator: AdvFacesGenerator | None = field(default=None, init=False, repr=False)
    discriminator: AdvFacesDiscriminator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("gen_dim", "gen_res_blocks", "dis_dim", "dis_layers", "batch_size", "epochs"):
            if int(getattr(self, k)) < (0 if k in ("gen_res_blocks", "epochs") else 1):
                raise ValueError(f"advfaces: {k} must be a positive integer; got {getattr(self, k)}")
        for k in ("lambda_id", "lambda_pert", "pert_eps", "lr"):
            if getattr(self, k) < 0:
                raise ValueError(f"advfaces: {k} must be >= 0; got {getattr(self, k)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"advfaces: Adam betas must be in [0, 1); got ({self.beta1}, {self.beta2})")

    @classmethod
    def with_networks(cls, surrogates: list[nn.Module], params: dict[str, Any], cfg: ErasableMaskConfig) -> "AdvFaces":
        """The attack with freshly initialised networks of its size."""
        attack = cls(surrogates=surrogates, **params)
        attack.generator = AdvFacesGenerator(dim=attack.gen_dim, n_res=attack.gen_res_blocks, in_channels=6)
        attack.discriminator = AdvFacesDiscriminator(dim=attack.dis_dim, n_layers=attack.dis_layers)
        return attack

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def _attack(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        if self.generator is None:
            raise ValueError("advfaces has no trained generator; build it with checkpoint=DIR or cfg=CONFIG")
        if x_target.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"advfaces feeds x_target beside x: sizes must match ({tuple(x_target.shape[-2:])} vs "
                f"{tuple(x.shape[-2:])}); resize the target faces"
            )
        dev = next(self.generator.parameters()).device
        with torch.no_grad():
            x_adv = apply_perturbation(x.to(dev), self.generator(x.to(dev), x_target.to(dev)))
        return quantise_8bit(x_adv).to(x.device)


class AdvFacesTrainer(GeneratorTrainer):
    """The ``advfaces`` stage (competitor_stages.py): G and D trained as the official code (module docstring)."""

    attack_class = AdvFaces
    stage = "advfaces"

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext, params: dict[str, Any], inputs: Path | None) -> None:
        super().__init__(cfg, ctx, params, inputs)
        a = AdvFaces.with_networks(list(self.surrogates.values()), self.params, cfg)
        self.attack.generator, self.attack.discriminator = a.generator.to(ctx.device), a.discriminator.to(ctx.device)
        self.G, self.D = self.attack.generator, self.attack.discriminator
        self.G_step, self.D_step = ctx.wrap_model(self.G), ctx.wrap_model(self.D)
        self.modules = {"generator": self.G, "discriminator": self.D}
        betas = (self.attack.beta1, self.attack.beta2)
        self.optimizers = {
            "generator": torch.optim.Adam(self.G.parameters(), lr=self.attack.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.D.parameters(), lr=self.attack.lr, betas=betas),
        }
        size = cfg.data.image_size
        self.eps = hinge_epsilon(self.attack.pert_eps, size, size)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        dev, a = self.ctx.device, self.attack
        x = batch["image"].to(dev)
        t = self.target_index(batch).to(dev)
        x_t = self.target_train[t]
        self.G.train()
        self.D.train()

        delta = self.G_step(x, x_t)
        x_adv = apply_perturbation(x, delta)
        logits = self.D_step(x_adv)
        l_gan = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        cos_loss = ensemble_cos_loss(list(self.surrogates.values()), x_adv, [e[t] for e in self.target_emb.values()])
        l_id = (cos_loss / 2.0).mean()  # 1 - (cos + 1)/2 = (1 - cos)/2
        norms = delta.flatten(1).norm(dim=1)  # δ is in [0, 1]-image units already
        l_pert = F.relu(norms - self.eps).mean()
        l_g = l_gan + a.lambda_id * l_id + a.lambda_pert * l_pert
        opt_g = self.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        l_g.backward()
        opt_g.step()

        n = x.shape[0]
        d_out = self.D_step(torch.cat([x, x_adv.detach()]))
        l_d = F.binary_cross_entropy_with_logits(
            d_out[:n], torch.ones_like(d_out[:n])
        ) + F.binary_cross_entropy_with_logits(d_out[n:], torch.zeros_like(d_out[n:]))
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        opt_d.step()
        return {
            "G/L_total": l_g.item(),
            "G/L_gan": l_gan.item(),
            "G/L_id": l_id.item(),
            "G/L_pert": l_pert.item(),
            "G/delta_l2": norms.mean().item(),
            "G/cos_target": 1.0 - cos_loss.mean().item(),
            "D/L_D": l_d.item(),
        }


@register("advfaces")
def build_advfaces(
    surrogates: list[nn.Module],
    *,
    checkpoint: str | Path | None = None,
    cfg: ErasableMaskConfig | None = None,
    train_dir: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    device: str | torch.device = "auto",
    **hparams: Any,
) -> AdvFaces:
    """AdvFaces from a trained ``advfaces`` stage checkpoint, or trained here first.

    Args:
        surrogates: the white-box FR models (success re-check of each call).
        checkpoint: a complete ``advfaces`` stage checkpoint (its hyper-parameters are used).
        cfg: without ``checkpoint``: train in this process on ``cfg``'s data, surrogates and
            targets (tiny configs; a real run trains with a runner:
            ``erasablemask.platform.competitor_training.train_competitor``).
        train_dir: where the in-process training writes (default: a temporary folder).
        max_steps_per_epoch: cut the in-process training's epochs (tests).
        device: where the loaded networks go.
        **hparams: :class:`AdvFaces` fields (with ``checkpoint``: must agree with it).

    Raises:
        ValueError: neither ``checkpoint`` nor ``cfg``, or an unknown hyper-parameter.
    """
    return build_generator_attack(
        "advfaces", surrogates, hparams, checkpoint=checkpoint, cfg=cfg, train_dir=train_dir,
        max_steps_per_epoch=max_steps_per_epoch, device=device,
    )  # type: ignore[return-value]
