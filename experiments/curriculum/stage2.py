"""Stage 2 (§IV-D, Eq. 15): E_adv and R trained end to end; G_enc and G_dec frozen.

E_adv starts as a copy of stage 1's G_enc, R as a copy of stage 1's G.
Per batch, with ``att_b`` sampled as in stage 1:

- ``x_adv, x_cov^{att_b} = protect(x, att_b)`` (Eq. 6-7 with information injection);
- one noise-pool layer (§IV-D) is applied to ``x_adv``; the same draw is
  reused by the meta-test forwards (a per-step noise seed);
- ``L_adv`` (Eq. 9-12): the attack of ``attack.method`` over
  ``attack.surrogates`` on the noised ``x_adv``, against the cached training
  image of the target(s), with the adaptive weights ``w_i(t)`` (Eq. 11)
  updated at each epoch's end;
- ``L_era`` (Eq. 13): ``R(noised x_adv)`` against ``x``;
- ``L_perb`` (Eq. 8): un-noised ``x_adv`` against ``x_cov^{att_b}``;
- ``L_att^G``, ``L_G`` (Eq. 3-4): D on the un-noised ``x_adv`` with ``att_b``;
- ``L_rec`` (Eq. 5): computed as written, ``‖G_dec(G_enc(x), att_a) − x‖₁`` on
  the frozen G: a constant that carries no gradient (Eq. 15 lists it; G is
  fixed in stage 2), logged only. ``stage2.rec_on`` offers
  ``"adversarial_att_a"`` — our alternative reading, Eq. 5 with the fused
  encoder of Eq. 6 in place of G_enc, ``‖G_dec(z_adv(x), att_a) − x‖₁``, which
  constrains E_adv — and ``"none"``.

One step of Adam on E_adv and R together (a single optimiser over both).
D keeps training on ``L_D + λ_att_D L_att^D`` with x_adv as the fake
(the paper lists only G_enc, G_dec as fixed; ``stage2.train_discriminator: false`` keeps D fixed).

Validation per epoch (val split, no transform): ASR at FAR ``evaluation.asr_far``
for every surrogate and black-box model, ESR (Eq. 18) at ``evaluation.esr_far``
and the identity-restoration rate.
"""

from __future__ import annotations

from typing import Any

import torch

from erasablemask.experiments.attacks.meta_auxiliary import TargetEmbeddings, adversarial_loss, make_generate
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import (
    build_noise_pool,
    load_protection_models,
)
from erasablemask.experiments.curriculum.checkpoint import Checkpoint
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.experiments.curriculum.losses import (
    AdaptiveWeights,
    attribute_loss,
    erasion_loss,
    generator_gan_loss,
    perturbation_loss,
    reconstruction_loss,
    stage2_loss,
)
from erasablemask.experiments.curriculum.optimization import adam, discriminator_step
from erasablemask.experiments.data.attribute_codes import code_attributes, sample_att_b
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.devices import MixedPrecision
from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
from erasablemask.experiments.evaluation.targets import build_targets, target_index_for
from erasablemask.experiments.evaluation.validator import ProtectionValidator
from erasablemask.experiments.fr_tools.zoo import build_fr_models
from erasablemask.models.erasablemask import restorer_code

__all__ = ["Stage2Trainer"]


class Stage2Trainer:
    """Stage 2's :class:`~erasablemask.experiments.curriculum.StageTrainer`."""

    stage = 2

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext, prev: Checkpoint) -> None:
        self.cfg, self.ctx = cfg, ctx
        dev = ctx.device
        G, self.D, self.protector, self.restorer = load_protection_models(cfg, prev, dev)
        self.E_adv = self.protector.perturbation_encoder
        self.protector_step = ctx.wrap_model(self.protector)
        self.restorer_step = ctx.wrap_model(self.restorer)
        if self.cfg.stage2.train_discriminator:
            self.D_step = ctx.wrap_model(self.D)
        else:  # a fixed critic: no gradients, and nothing for DDP to synchronise
            self.D_step = self.D.requires_grad_(False).eval()
        self.noise = build_noise_pool(cfg)
        self.mp = MixedPrecision(cfg.compute.precision, dev)
        a = cfg.attack
        self.surrogates = build_fr_models(cfg, list(a.surrogates), dev, progress=ctx.progress)
        self.black_box = build_fr_models(cfg, list(a.black_box), dev, progress=ctx.progress)
        self.targets = build_targets(cfg)
        self.target_emb = TargetEmbeddings(self.surrogates, self.targets.train_images.to(dev))
        self.weights = AdaptiveWeights(list(a.surrogates), enabled=a.adaptive_weights)
        self.modules = {"generator": G, "discriminator": self.D, "protector": self.protector,
                        "restorer": self.restorer}
        opt = cfg.stage2.optimizer
        self.optimizers = {"protection": adam(list(self.E_adv.parameters()) + list(self.restorer.parameters()), opt)}
        if self.cfg.stage2.train_discriminator:
            self.optimizers["discriminator"] = adam(self.D.parameters(), opt)
        self.rng = torch.Generator()
        self.generators = {"stage2_rng": self.rng}
        self.dataset = split_dataset(cfg, "train")
        self.batch_size = cfg.stage2.batch_size
        self.validator = ProtectionValidator(cfg, {**self.surrogates, **self.black_box}, self.targets, dev)
        self.protection = ErasableMaskProtection(cfg, self.protector, self.restorer)  # the live networks

    def _train_mode(self) -> None:
        self.protector.train()
        self.restorer.train()
        self.D.train() if self.cfg.stage2.train_discriminator else self.D.eval()

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg, dev = self.cfg, self.ctx.device
        x, att_a = batch["image"].to(dev), batch["attrs"]
        att_b = sample_att_b(att_a, cfg, self.rng)
        a_a, a_b = code_attributes(att_a, cfg).to(dev), code_attributes(att_b, cfg).to(dev)
        att_a, att_b = att_a.to(dev), att_b.to(dev)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=self.rng))
        self._train_mode()
        with self.mp.autocast():
            total, logs, adv, x_adv = self._losses(x, att_a, att_b, a_a, a_b, batch["index"], noise_seed)
        self.mp.step(total, self.optimizers["protection"])
        logs.update({f"L_pri/{k}": v for k, v in adv.per_surrogate_pri.items()})
        logs["L_adv_mean"] = adv.mean
        logs.update(adv.meta_logs())  # ‖θ'−θ‖/‖θ‖ and L_aux(θ') − L_aux(θ) of the meta-train step
        if self.cfg.stage2.train_discriminator:
            logs.update(self._d_step(x, x_adv.detach().float(), att_a))
        return logs

    def _losses(self, x, att_a, att_b, a_a, a_b, index, noise_seed: int):
        """Eq. 15's total and its terms, and the attack's result (under the trainer's autocast)."""
        cfg, s = self.cfg, self.cfg.stage2
        x_adv, x_cov_b = self.protector_step(x, a_b)
        generate = make_generate(self.protector, x, a_b, noise=self.noise, noise_seed=noise_seed)
        x_noised = self.noise(x_adv, generator=torch.Generator().manual_seed(noise_seed))
        adv = adversarial_loss(
            generate, dict(self.E_adv.named_parameters()), self.surrogates, self.target_emb, self.weights.weights(),
            method=cfg.attack.method, meta_lr=cfg.attack.meta_lr, epsilon=cfg.attack.epsilon,
            target_index=target_index_for(index, len(self.targets)), x_adv=x_noised,
        )
        for name, value in adv.per_surrogate_pri.items():
            self.weights.record_batch(name, value, n=x.shape[0])
        x_rec = self.restorer_step(x_noised, restorer_code(cfg.protection.restorer_attribute_input, a_a, a_b))
        f_g, f_att = self.D_step(x_adv)
        rec_on = s.rec_on
        if rec_on == "adversarial_att_a":
            l_rec = reconstruction_loss(self.protector_step(x, a_a)[0], x)
        elif rec_on == "frozen_generator":
            with torch.no_grad():
                l_rec = reconstruction_loss(self.protector.generator(x, a_a), x)
        else:  # "none"
            l_rec = x.new_zeros(())
        total, logs = stage2_loss(
            l_att=attribute_loss(f_att, att_b), l_rec=l_rec, l_G=generator_gan_loss(f_g, kind=cfg.stage1.gan_loss),
            l_adv=adv.loss,
            l_era=erasion_loss(x_rec, x, reduction=s.era_reduction),
            l_perb=perturbation_loss(x_adv, x_cov_b, sigma1=s.sigma1, units=s.perb_units,
                                     scale_with_size=s.sigma1_scale_with_size),
            cfg=s,
        )
        return total, logs, adv, x_adv

    def _d_step(self, x: torch.Tensor, x_fake: torch.Tensor, att_a: torch.Tensor) -> dict[str, float]:
        return discriminator_step(self.D_step, self.optimizers["discriminator"], x, x_fake, att_a,
                                  self.cfg.stage1, self.rng, mp=self.mp)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        means = self.weights.end_epoch()  # Eq. 11's Mean(L_FR_i{t})
        out = {f"train/epoch_L_pri/{k}": v for k, v in means.items()}
        out.update({f"w/{k}": v for k, v in self.weights.weights().items()})
        out.update(self.validator.validate(self.protection, prefix="val/"))
        return out

    def extra_state(self) -> dict[str, Any]:
        return {"adaptive_weights": self.weights.state_dict(), "amp": self.mp.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.weights.load_state_dict(state["adaptive_weights"])
        self.mp.load_state_dict(state.get("amp", {}))


