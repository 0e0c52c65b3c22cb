"""GMAA (Li et al., CVPR 2023): a generator conditioned on continuous expression states, adversarial on all of them.

Official code: ``tokaka22/GMAA`` (``src/models/gmaa/gmaa_module.py``, ``models/model.py``,
``configs/model/gmaa.yaml``, ``script/train.sh``; competitors.md §7). The generator
``x_fake = G(x, c)`` (:mod:`erasablemask.models.competitors.gmaa`) is trained so that *every*
condition state ``c`` on the manifold gives an adversarial face ("expanded attack domain"),
against a target identity represented by several images ("expanded target domain"). Per
training step, with the ``train.sh`` values as defaults:

- D (every step): ``MSE(D_src(x), 1) + MSE(D_src(x_fake), 0) + λ_cls·MSE(D_cls(x), c_org)
  + λ_gp·GP`` (LSGAN, condition regression, WGAN-GP penalty on interpolates);
- G (every ``g_freq``-th step): ``λ_gan·MSE(D_src(x_fake), 1) + λ_cls·MSE(D_cls(x_fake), c_trg)
  + λ_ssim·(1 − SSIM(x_fake, teacher(x, c_trg))) + λ_adv·L_adv``, with
  ``L_adv = mean over {di_copies diversity copies × surrogates} of 1 − cos(F(T(x_fake)), F(x_t))``,
  ``T`` = input diversity (resize to [0.9·W, W) and pad, p 0.5) after Gaussian noise (p 0.5,
  std U(0, 1)·√0.1), and ``x_t`` one image drawn per sample from its target identity's set.

The mini-world adaptation (documented deviations, competitors.md §7 "Adaptation"):

- **AU states -> attribute intensities.** OpenFace action units cannot be computed on the
  mini-world, so the condition is the 13 AttGAN attributes as continuous intensities in
  [0, 1] (``n_cond = 13`` instead of 17 AUs). ``c_org`` is the source's 0/1 labels; ``c_trg``
  is drawn per step (``condition_sampling``): ``"uniform"`` (default) U(0, 1) per attribute,
  so the whole continuous box is the attack domain; ``"shuffle"``: another training image's
  labels (the official ``au_mode=random`` analogue);
- **teacher.** The official frozen GANimation editors (whole face + eye/nose/mouth crops at
  landmarks) give the pseudo ground truth; here (``teacher="attgan"``) the run's clean stage-1
  AttGAN edits ``x`` to ``c_trg`` (continuous intensities mapped linearly into its
  ``data.attribute_coding``), passed as the stage's ``inputs``. The face box is the whole
  mini-world image, so the background SSIM term and the landmark crops are dropped.
  ``teacher="none"`` keeps the structure term as ``SSIM(x_fake, x)`` (no stage 1 needed);
- **target set.** Mini-world targets (``attack.target.mode=miniworld_heldout``) use every
  train-split image of the target identity (their eval-split image stays unseen); image
  targets (``mode=images``) have their one training image;
- **condition at attack time.** ``protect(x, x_target, att_a, att_b)`` conditions on
  ``att_b`` (the evaluation's requested edit, as intensities), else ``att_a``, else
  ``default_condition`` for every attribute. GMAA's generator is not conditioned on the
  target: like ErasableMask it attacks the identity it was trained for and ignores
  ``x_target``;
- an "epoch" is one pass over the training split (official: 20 epochs over CelebA-HQ).

The official generator's ``x_fake`` is its colour-regression head directly (no attention
blending); so is ours. The returned faces are rounded to 8 bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.experiments.attacks.base import quantise_8bit
from erasablemask.experiments.attacks.generator_base import (
    GeneratorAttack,
    GeneratorTrainer,
    build_generator_attack,
)
from erasablemask.experiments.attacks.pgd import TransferOptions, _diverse
from erasablemask.experiments.attacks.registry import register
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.checkpoint import load_checkpoint
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.experiments.curriculum.losses import gradient_penalty
from erasablemask.experiments.data.attributes import to_generator_input
from erasablemask.models.competitors.gmaa import GMAADiscriminator, GMAAGenerator

__all__ = ["GMAA", "GMAATrainer", "build_gmaa", "target_image_sets", "continuous_code"]


def continuous_code(c: Tensor, coding: str) -> Tensor:
    """Intensities in [0, 1] -> the AttGAN code, linear between the codes of 0 and 1 labels."""
    lo = to_generator_input(torch.zeros(1, c.shape[1]), coding).to(c)
    hi = to_generator_input(torch.ones(1, c.shape[1]), coding).to(c)
    return lo + c * (hi - lo)


def target_image_sets(cfg: ErasableMaskConfig, targets) -> list[Tensor]:
    """Per target, ``(M_k, 3, H, W)`` images the attack may see (module docstring, "target set")."""
    if cfg.attack.target.mode != "miniworld_heldout":
        return [img[None] for img in targets.train_images]
    from erasablemask.experiments.data.splits import build_world

    world = build_world(cfg)
    ids = [int(name.split(":id", 1)[1]) for name in targets.names]
    return [world.images(world.indices("train", [k])) for k in ids]


@dataclass(eq=False)
class GMAA(GeneratorAttack):
    """GMAA with attribute-intensity conditions (module docstring).

    Defaults: ``script/train.sh`` (which overrides ``configs/model/gmaa.yaml``) and ``models/model.py``.
    """

    name: ClassVar[str] = "gmaa"

    gen_dim: int = 64  # models/model.py Generator conv_dim
    gen_res_blocks: int = 6  # models/model.py Generator repeat_num
    dis_dim: int = 64  # models/model.py Discriminator conv_dim
    dis_layers: int = 6  # models/model.py Discriminator repeat_num (64 -> 2048)
    lambda_gan: float = 10.0  # train.sh: adversarial GAN weight of G
    lambda_cls: float = 250.0  # train.sh: condition-regression weight (D and G)
    lambda_gp: float = 10.0  # train.sh: gradient-penalty weight
    lambda_ssim: float = 20.0  # train.sh: g_ssim_dt_w (1 - SSIM against the teacher)
    lambda_adv: float = 25.0  # train.sh: 10 x (lambda_adv 5 x 0.5) on (1 - cos)
    di_copies: int = 5  # gmaa_module.py: 5 input-diversity copies per step
    di_resize_rate: float = 0.9  # gmaa_module.py: input_diversity resize_rate
    di_prob: float = 0.5  # gmaa_module.py: input_diversity diversity_prob
    noise_prob: float = 0.5  # gmaa_module.py: Gaussian noise probability
    noise_std: float = math.sqrt(0.1)  # gmaa_module.py: std = U(0, 1) * sqrt(0.1)
    g_freq: int = 3  # train.sh: G updated every 3rd step
    lr: float = 1e-4  # train.sh: g_lr = d_lr = 1e-4
    beta1: float = 0.5  # gmaa.yaml: Adam beta1
    beta2: float = 0.99  # gmaa.yaml: Adam beta2
    batch_size: int = 12  # train.sh: batch_size
    epochs: int = 20  # train.sh: max_epochs
    condition_sampling: str = "uniform"  # ours (module docstring); "shuffle": official au_mode=random analogue
    teacher: str = "attgan"  # ours: the run's stage-1 AttGAN stands in for the GANimation editors
    default_condition: float = 0.5  # ours: the intensity used when protect() gets no attributes
    n_cond: int = 13  # the 13 AttGAN attributes (officially 17 AUs)

    generator: GMAAGenerator | None = field(default=None, init=False, repr=False)
    discriminator: GMAADiscriminator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.condition_sampling not in ("uniform", "shuffle"):
            raise ValueError(
                f"gmaa: condition_sampling must be 'uniform' or 'shuffle'; got {self.condition_sampling!r}"
            )
        if self.teacher not in ("attgan", "none"):
            raise ValueError(
                f"gmaa: teacher must be 'attgan' (stage-1 checkpoint as inputs) or 'none'; got {self.teacher!r}"
            )
        for k in ("gen_dim", "dis_dim", "dis_layers", "di_copies", "g_freq", "batch_size", "n_cond"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"gmaa: {k} must be >= 1; got {getattr(self, k)}")
        for k in ("di_prob", "noise_prob", "default_condition"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"gmaa: {k} must be in [0, 1]; got {getattr(self, k)}")
        TransferOptions(input_diversity=True, di_prob=self.di_prob, di_resize_rate=self.di_resize_rate)

    @classmethod
    def with_networks(cls, surrogates: list[nn.Module], params: dict[str, Any], cfg: ErasableMaskConfig) -> "GMAA":
        """The attack with freshly initialised networks of its size at ``cfg.data.image_size``."""
        attack = cls(surrogates=surrogates, **params)
        attack.generator = GMAAGenerator(n_cond=attack.n_cond, dim=attack.gen_dim, n_res=attack.gen_res_blocks)
        attack.discriminator = GMAADiscriminator(
            img_size=cfg.data.image_size, n_cond=attack.n_cond, dim=attack.dis_dim, n_layers=attack.dis_layers
        )
        return attack

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def condition(self, n: int, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        """The attack-time condition ``(n, n_cond)``: ``att_b``, else ``att_a``, else ``default_condition``."""
        att = att_b if att_b is not None else att_a
        if att is None:
            return torch.full((n, self.n_cond), float(self.default_condition))
        if att.shape[1] != self.n_cond:
            raise ValueError(f"gmaa was trained on {self.n_cond} condition intensities; got {att.shape[1]} attributes")
        return att.float()

    def _attack(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        if self.generator is None:
            raise ValueError("gmaa has no trained generator; build it with checkpoint=DIR or cfg=CONFIG")
        dev = next(self.generator.parameters()).device
        with torch.no_grad():
            x_fake = self.generator(x.to(dev), self.condition(x.shape[0], att_a, att_b).to(dev))
        return quantise_8bit(x_fake).to(x.device)


class GMAATrainer(GeneratorTrainer):
    """The ``gmaa`` stage (competitor_stages.py): D every step, G every ``g_freq`` steps (module docstring)."""

    attack_class = GMAA
    stage = "gmaa"

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext, params: dict[str, Any], inputs: Path | None) -> None:
        super().__init__(cfg, ctx, params, inputs)
        a = self.attack
        if a.n_cond != len(cfg.model.attributes):
            raise ValueError(f"gmaa: n_cond={a.n_cond} but the data has {len(cfg.model.attributes)} attributes")
        nets = GMAA.with_networks(list(self.surrogates.values()), self.params, cfg)
        a.generator, a.discriminator = nets.generator.to(ctx.device), nets.discriminator.to(ctx.device)
        self.G, self.D = a.generator, a.discriminator
        self.G_step, self.D_step = ctx.wrap_model(self.G), ctx.wrap_model(self.D)
        self.modules = {"generator": self.G, "discriminator": self.D}
        betas = (a.beta1, a.beta2)
        self.optimizers = {
            "generator": torch.optim.Adam(self.G.parameters(), lr=a.lr, betas=betas),
            "discriminator": torch.optim.Adam(self.D.parameters(), lr=a.lr, betas=betas),
        }
        self.teacher = self._load_teacher(cfg, inputs) if a.teacher == "attgan" else None
        with torch.no_grad():  # the target sets' embeddings, per surrogate: list over targets of (M_k, D)
            sets = target_image_sets(cfg, self.targets)
            self.set_emb = {n: [fr(s.to(ctx.device)) for s in sets] for n, fr in self.surrogates.items()}
        self.step_count = 0

    def _load_teacher(self, cfg: ErasableMaskConfig, inputs: Path | None) -> nn.Module:
        from erasablemask.experiments.curriculum.build import build_generator, freeze

        if inputs is None:
            raise ValueError(
                "gmaa with teacher='attgan' needs the run's stage-1 checkpoint as inputs "
                "(CLI: --inputs RUN/stage1/...; or set teacher=none)"
            )
        G = build_generator(cfg)
        load_checkpoint(inputs, cfg, stage=1, purpose="input").load_module("generator", G)
        return freeze(G.to(self.ctx.device))

    def _target_embeddings(self, t: Tensor) -> dict[str, Tensor]:
        """One image per sample from its target's set (drawn with the stage RNG), embedded per surrogate."""
        sizes = [len(e) for e in next(iter(self.set_emb.values()))]
        picks = [int(torch.randint(0, sizes[int(k)], (), generator=self.rng)) for k in t]
        return {
            n: torch.stack([embs[int(k)][j] for k, j in zip(t, picks, strict=True)]) for n, embs in self.set_emb.items()
        }

    def _transform(self, x: Tensor) -> Tensor:
        """T = DI ∘ Gaussian noise (module docstring), randomness from the stage RNG."""
        a = self.attack
        if float(torch.rand((), generator=self.rng)) < a.noise_prob:
            std = float(torch.rand((), generator=self.rng)) * a.noise_std
            x = (x + std * torch.randn(x.shape, generator=self.rng).to(x)).clamp(-1.0, 1.0)  # FR input range
        opts = TransferOptions(input_diversity=True, di_prob=a.di_prob, di_resize_rate=a.di_resize_rate)
        return _diverse(x, opts, self.rng)

    def _c_trg(self, att_a: Tensor) -> Tensor:
        if self.attack.condition_sampling == "shuffle":
            return att_a[torch.randperm(att_a.shape[0], generator=self.rng)].float()
        return torch.rand(att_a.shape, generator=self.rng)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        dev, a = self.ctx.device, self.attack
        x = batch["image"].to(dev)
        c_org = batch["attrs"].float().to(dev)
        c_trg = self._c_trg(batch["attrs"]).to(dev)
        t = self.target_index(batch)
        self.G.train()
        self.D.train()
        g_turn = self.step_count % a.g_freq == a.g_freq - 1
        self.step_count += 1

        with torch.set_grad_enabled(g_turn):
            x_fake = self.G_step(x, c_trg)
        n = x.shape[0]
        src, cls = self.D_step(torch.cat([x, x_fake.detach()]))
        l_d_src = F.mse_loss(src[:n], torch.ones_like(src[:n])) + F.mse_loss(src[n:], torch.zeros_like(src[n:]))
        l_d_cls = F.mse_loss(cls[:n], c_org)
        gp = gradient_penalty(self.D_step, x, x_fake.detach(), generator=self.rng)
        l_d = l_d_src + a.lambda_cls * l_d_cls + a.lambda_gp * gp
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        opt_d.step()
        logs = {"D/L_src": l_d_src.item(), "D/L_cls": l_d_cls.item(), "D/L_gp": gp.item(), "D/L_total": l_d.item()}
        if not g_turn:
            return logs

        src_f, cls_f = self.D_step(x_fake)
        l_gan = F.mse_loss(src_f, torch.ones_like(src_f))
        l_cls = F.mse_loss(cls_f, c_trg)
        if self.teacher is not None:
            with torch.no_grad():
                reference = self.teacher(x, continuous_code(c_trg, self.cfg.data.attribute_coding))
        else:
            reference = x
        ssim = kornia.metrics.ssim((x_fake + 1) / 2, (reference + 1) / 2, window_size=11).mean()
        t_emb = self._target_embeddings(t)
        losses = [
            1.0 - F.cosine_similarity(fr(self._transform(x_fake)), t_emb[name].to(dev), dim=1).mean()
            for _ in range(a.di_copies)
            for name, fr in self.surrogates.items()
        ]
        l_adv = torch.stack(losses).mean()
        l_g = a.lambda_gan * l_gan + a.lambda_cls * l_cls + a.lambda_ssim * (1.0 - ssim) + a.lambda_adv * l_adv
        opt_g = self.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        l_g.backward()
        opt_g.step()
        logs.update(
            {
                "G/L_gan": l_gan.item(),
                "G/L_cls": l_cls.item(),
                "G/ssim": ssim.item(),
                "G/L_adv": l_adv.item(),
                "G/L_total": l_g.item(),
            }
        )
        return logs

    def trainer_state(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])


@register("gmaa")
def build_gmaa(
    surrogates: list[nn.Module],
    *,
    checkpoint: str | Path | None = None,
    cfg: ErasableMaskConfig | None = None,
    train_dir: str | Path | None = None,
    inputs: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    device: str | torch.device = "auto",
    **hparams: Any,
) -> GMAA:
    """GMAA from a trained ``gmaa`` stage checkpoint, or trained here first.

    Args:
        surrogates: the white-box FR models (success re-check of each call).
        checkpoint: a complete ``gmaa`` stage checkpoint (its hyper-parameters are used).
        cfg: without ``checkpoint``: train in this process on ``cfg`` (tiny configs).
        train_dir: where the in-process training writes (default: a temporary folder).
        inputs: the stage-1 checkpoint of the AttGAN teacher (``teacher="attgan"``).
        max_steps_per_epoch: cut the in-process training's epochs (tests).
        device: where the loaded networks go.
        **hparams: :class:`GMAA` fields (with ``checkpoint``: must agree with it).
    """
    return build_generator_attack(
        "gmaa", surrogates, hparams, checkpoint=checkpoint, cfg=cfg, train_dir=train_dir, inputs=inputs, 
        max_steps_per_epoch=max_steps_per_epoch, device=device,
    )  # type: ignore[return-value]
