"""Stage 1 (§IV-D, Eq. 14): G_enc, G_dec and D learn attribute editing.

Per batch (AttGAN-PyTorch's loop): ``att_b`` is sampled from ``att_a``
(``stage1.att_b_sampling``); D takes a step on ``L_D + λ_att_D L_att^D``
(Eq. 3-4, plus the gradient penalty for ``gan_loss=wgan_gp``) every batch, G
takes a step on ``L1 = λ_rec L_rec + λ_att L_att^G + λ_G L_G`` (Eq. 14) every
``d_steps_per_g_step`` batches. The real and fake images go through D in one
concatenated call (D's instance norm is per sample, so this equals two calls,
and a DDP-wrapped D sees one forward per step).

Validation per epoch on the val split: L_rec of the reconstruction and the
attribute accuracy of single-attribute edits as judged by D_att (a quick
training signal only: G is trained against this very D_att; the evaluation
uses a separately trained classifier).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import build_discriminator, build_generator
from erasablemask.experiments.curriculum.context import StageContext
from erasablemask.experiments.curriculum.losses import (
    attribute_loss,
    generator_gan_loss,
    reconstruction_loss,
    stage1_generator_loss,
)
from erasablemask.experiments.curriculum.optimization import adam, discriminator_step
from erasablemask.experiments.data.attribute_codes import code_attributes, sample_att_b
from erasablemask.experiments.data.attributes import sample_target_attributes
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.devices import MixedPrecision
from erasablemask.experiments.evaluation.metrics import attribute_accuracy
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.attgan import AttGANGenerator

__all__ = ["EditAndReconstruct", "Stage1Trainer"]


class EditAndReconstruct(nn.Module):
    """G's stage-1 forward: encode once, decode with ``a_a`` (reconstruction) and ``a_b`` (edit).

    ``forward(x, a_a, a_b) -> (x_rec, x_edit)``, all (N, 3, H, W) in [-1, 1].
    """

    def __init__(self, generator: AttGANGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor, a_a: Tensor, a_b: Tensor) -> tuple[Tensor, Tensor]:
        zs = self.generator.encode(x)
        return self.generator.decode(zs, a_a), self.generator.decode(zs, a_b)


class Stage1Trainer:
    """Stage 1's :class:`~erasablemask.experiments.curriculum.StageTrainer`."""

    stage = 1

    def __init__(self, cfg: ErasableMaskConfig, ctx: StageContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        s = cfg.stage1
        device = ctx.device
        self.G = build_generator(cfg).to(device)
        self.D = build_discriminator(cfg).to(device)
        self.G_step = ctx.wrap_model(EditAndReconstruct(self.G))
        self.D_step = ctx.wrap_model(self.D)
        if cfg.compute.compile:  # compute.compile: stage 1 has no second-order gradients
            self.G_step, self.D_step = torch.compile(self.G_step), torch.compile(self.D_step)
        self.mp = MixedPrecision(cfg.compute.precision, device)
        self.modules = {"generator": self.G, "discriminator": self.D}
        self.optimizers = {"generator": adam(self.G.parameters(), s.optimizer),
                           "discriminator": adam(self.D.parameters(), s.optimizer)}
        self.rng = torch.Generator()
        self.generators = {"stage1_rng": self.rng}
        self.dataset = split_dataset(cfg, "train")
        self.batch_size = s.batch_size
        self.val = split_dataset(cfg, "val")
        self.batches_seen = 0

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        s, dev = self.cfg.stage1, self.ctx.device
        x, att_a = batch["image"].to(dev), batch["attrs"]
        att_b = sample_att_b(att_a, self.cfg, self.rng)
        a_a, a_b = code_attributes(att_a, self.cfg).to(dev), code_attributes(att_b, self.cfg).to(dev)
        att_a, att_b = att_a.to(dev), att_b.to(dev)
        self.G.train()
        self.D.train()
        # D step (Eq. 3-4): real x_cov^{att_a} vs fake G(x, att_b).
        with torch.no_grad(), self.mp.autocast():
            x_fake = self.G(x, a_b).float()
        logs = discriminator_step(self.D_step, self.optimizers["discriminator"], x, x_fake, att_a, s, self.rng,
                                  mp=self.mp)
        self.batches_seen += 1
        if self.batches_seen % s.d_steps_per_g_step == 0:
            # G step (Eq. 14).
            with self.mp.autocast():
                x_rec, x_edit = self.G_step(x, a_a, a_b)
                f_g, f_att = self.D_step(x_edit)
                total_G, logs_G = stage1_generator_loss(
                    l_rec=reconstruction_loss(x_rec, x), l_att=attribute_loss(f_att, att_b),
                    l_G=generator_gan_loss(f_g, kind=s.gan_loss), cfg=s,
                )
            self.mp.step(total_G, self.optimizers["generator"])
            logs.update({f"G/{k}": v for k, v in logs_G.items()})
        return logs

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Val L_rec and D_att's accuracy on single-attribute edits (fixed att_b every epoch)."""
        self.G.eval()
        self.D.eval()
        dev = self.ctx.device
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "val_att_b"))
        rec, preds, att_as, att_bs = [], [], [], []
        for start in range(0, len(self.val), 64):
            items = [self.val[i] for i in range(start, min(start + 64, len(self.val)))]
            x = torch.stack([it["image"] for it in items]).to(dev)
            att_a = torch.stack([it["attrs"] for it in items])
            att_b = sample_target_attributes(att_a, gen, mode="flip_one")
            zs = self.G.encode(x)
            x_rec = self.G.decode(zs, code_attributes(att_a, self.cfg).to(dev))
            x_edit = self.G.decode(zs, code_attributes(att_b, self.cfg).to(dev))
            rec.append(float(reconstruction_loss(x_rec, x)) * x.shape[0])
            preds.append((self.D(x_edit)[1] > 0).float().cpu())
            att_as.append(att_a)
            att_bs.append(att_b)
        if not preds:
            return {}
        acc = attribute_accuracy(torch.cat(preds), torch.cat(att_bs), torch.cat(att_as))
        return {"val/L_rec": sum(rec) / len(self.val), "val/att_acc_D_all": acc["all"],
                "val/att_acc_D_edited": acc["edited"]}

    def extra_state(self) -> dict[str, Any]:
        return {"batches_seen": self.batches_seen, "amp": self.mp.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.batches_seen = int(state["batches_seen"])
        self.mp.load_state_dict(state.get("amp", {}))
