"""Stage 3 (§IV-D, Eq. 16): R alone learns to erase, on noised protected faces.

The stage-2 protector (frozen G + E_adv, eval mode, no gradients) makes
``x_adv`` for each batch (``att_b`` sampled as in stage 1), one noise-pool
layer is applied (§IV-D), and R takes an Adam step on
``L3 = L_era(R(noised x_adv), x)`` (Eq. 13, 16; reduction ``stage2.era_reduction``).
Validation per epoch is stage 2's (ASR, ESR, identity restoration on the val split).
"""

from __future__ import annotations

from typing import Any

import torch

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import build_noise_pool, freeze, load_protection_models
from erasablemask.experiments.curriculum.checkpoint import Checkpoint
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.experiments.curriculum.losses import erasion_loss, stage3_loss
from erasablemask.experiments.curriculum.optimization import adam
from erasablemask.experiments.data.attribute_codes import code_attributes, sample_att_b
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.devices import MixedPrecision
from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection
from erasablemask.experiments.evaluation.targets import build_targets
from erasablemask.experiments.evaluation.validator import ProtectionValidator
from erasablemask.experiments.fr_tools.zoo import build_fr_models
from erasablemask.models.erasablemask import restorer_code

__all__ = ["Stage3Trainer"]


class Stage3Trainer:
    """Stage 3's :class:`~erasablemask.experiments.curriculum.StageTrainer`."""

    stage = 3

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext, prev: Checkpoint) -> None:
        self.cfg, self.ctx = cfg, ctx
        dev = ctx.device
        G, D, self.protector, self.restorer = load_protection_models(cfg, prev, dev)
        freeze(self.protector)
        self.restorer_step = ctx.wrap_model(self.restorer)
        self.noise = build_noise_pool(cfg)
        self.mp = MixedPrecision(cfg.compute.precision, dev)
        self.modules = {"generator": G, "discriminator": D, "protector": self.protector, "restorer": self.restorer}
        self.optimizers = {"restorer": adam(self.restorer.parameters(), cfg.stage3.optimizer)}
        self.rng = torch.Generator()
        self.generators = {"stage3_rng": self.rng}
        self.dataset = split_dataset(cfg, "train")
        self.batch_size = cfg.stage3.batch_size
        a = cfg.attack
        models = build_fr_models(cfg, list(a.surrogates) + list(a.black_box), dev, progress=ctx.progress)
        self.validator = ProtectionValidator(cfg, models, build_targets(cfg), dev)
        self.protection = ErasableMaskProtection(cfg, self.protector, self.restorer)  # the live networks

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg, dev = self.cfg, self.ctx.device
        x, att_a = batch["image"].to(dev), batch["attrs"]
        att_b = sample_att_b(att_a, cfg, self.rng)
        a_a, a_b = code_attributes(att_a, cfg).to(dev), code_attributes(att_b, cfg).to(dev)
        self.restorer.train()
        with torch.no_grad(), self.mp.autocast():
            x_adv = self.protector.protect(x, a_b).x_adv.float()
        with torch.no_grad():
            x_noised = self.noise(x_adv, generator=self.rng)
        with self.mp.autocast():
            x_rec = self.restorer_step(x_noised, restorer_code(cfg.protection.restorer_attribute_input, a_a, a_b))
            total, logs = stage3_loss(l_era=erasion_loss(x_rec, x, reduction=cfg.stage2.era_reduction),
                                      cfg=cfg.stage3)
        self.mp.step(total, self.optimizers["restorer"])
        return logs

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return self.validator.validate(self.protection, prefix="val/")

    def extra_state(self) -> dict[str, Any]:
        return {"amp": self.mp.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.mp.load_state_dict(state.get("amp", {}))
