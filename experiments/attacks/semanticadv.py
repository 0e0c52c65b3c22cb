"""SemanticAdv (Qiu et al., ECCV 2020), adapted to our AttGAN: attribute-conditioned feature interpolation.

Official code: ``AI-secure/SemanticAdv`` (``attacks/semantic_attack.py``
``FP_CW_TV``, ``Face/verification_attack.py``, ``attacks/utils.py`` ``TVLoss``;
competitors.md §6). Per source image ``x``, target face ``x_t`` and edit:

1. *refinement pre-step* (``refine_steps`` Adam steps, lr ``refine_lr``) on
   the input: ``x' = argmin MSE(G(x', c_src), x) + MSE(x', x)``, clamped to
   [-1, 1] (the generator is not changed);
2. endpoint features at decoder layer ``interp_layer``:
   ``e1 = h_l(x', c_src)`` and ``e2 = h_l(x', c_edit)``;
3. an interpolation tensor ``α`` of the feature map's shape (per element),
   initialised at ``alpha_init`` and clamped to ``[alpha_min, alpha_max]`` in
   the forward pass; ``x_adv = f_l((1 - α) ⊙ e1 + α ⊙ e2)``; Adam (lr
   ``lr``) on ``α`` for ``steps`` iterations minimising
   ``mean_k MSE(F_k(x_adv), F_k(x_t)) + λ_TV · TV₂(α)`` (the CW-style feature
   loss on unit embeddings, averaged over the embedding dimension as
   ``nn.MSELoss`` does; ``TV₂`` the squared-difference total variation,
   size-averaged, of ``TVLoss``); the last iterate is returned (no early stop,
   as the official default).

Adaptation (documented deviations, competitors.md §6 "Mapping"):

- the generator is our AttGAN (the run's frozen stage-1 ``G``), not
  StarGAN: AttGAN tiles the attribute code onto the deepest encoder map, so
  encoder features do not depend on it; we interpolate the output of decoder
  layer ``interp_layer`` (default 0, the first transposed conv after the code
  concat, before the shortcut), where the two codes first differ. Decoder
  layers after it that re-inject the code (``inject_layers``) get ``c_edit``;
- the edit is the evaluation's requested ``att_b`` (all attributes it
  changes), not one attribute at a time, so SemanticAdv protects the same
  edits as ErasableMask; its "all 17 attributes" sweep is not run;
- the verifier loss is averaged over the surrogates (the official code
  attacks one ResNet-101 verifier) and uses cosine-normalised embeddings of
  our FR wrappers.

The returned faces are rounded to 8 bits (what a saved image holds).
Hyper-parameter defaults are the official ones (``verification_attack.py``
arguments and ``FP_CW_TV``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.experiments.attacks.base import Attack, quantise_8bit
from erasablemask.experiments.attacks.registry import register
from erasablemask.experiments.data.attributes import to_generator_input

__all__ = ["SemanticAdv", "tv_squared"]


def tv_squared(a: Tensor) -> Tensor:
    """Per-sample squared-difference total variation, size-averaged (SemanticAdv ``TVLoss``, weight applied outside)."""
    _, c, h, w = a.shape
    dh = (a[:, :, 1:, :] - a[:, :, :-1, :]).pow(2).sum(dim=(1, 2, 3)) / max(c * (h - 1) * w, 1)
    dw = (a[:, :, :, 1:] - a[:, :, :, :-1]).pow(2).sum(dim=(1, 2, 3)) / max(c * h * (w - 1), 1)
    return 2.0 * (dh + dw)


@register("semanticadv")
@dataclass(eq=False)
class SemanticAdv(Attack):
    """SemanticAdv on the AttGAN generator (module docstring).

    Attributes:
        generator: the frozen AttGAN generator (``encode_unchecked``/``decode_layers``); required.
        attribute_coding: how 0/1 labels are coded for ``generator`` (the run's ``data.attribute_coding``).
        interp_layer: decoder layer whose output is interpolated (official ``--interp_layer 0``).
        steps: Adam iterations on α (official 200).
        lr: Adam learning rate on α (official 0.05).
        alpha_init, alpha_min, alpha_max: α's start and clamp (official 0.8 in [0.6, 1.0]).
        tv_weight: λ_TV (official 0.01).
        refine_steps: input-refinement pre-step iterations (official 300; 0 skips it).
        refine_lr: its Adam learning rate (official 0.01).
    """

    generator: nn.Module | None = None
    attribute_coding: str = "pm0.5"
    interp_layer: int = 0
    steps: int = 200
    lr: float = 0.05
    alpha_init: float = 0.8
    alpha_min: float = 0.6
    alpha_max: float = 1.0
    tv_weight: float = 0.01
    refine_steps: int = 300
    refine_lr: float = 0.01

    name: ClassVar[str] = "semanticadv"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.generator is None:
            raise ValueError(
                "attack 'semanticadv' needs `generator`, the frozen AttGAN generator (the run's "
                "stage-1 G); pass generator=..."
            )
        n_dec = len(self.generator.dec_layers)
        if not 0 <= self.interp_layer < n_dec - 1:
            raise ValueError(
                f"attack 'semanticadv': interp_layer must be in [0, {n_dec - 2}] (a decoder layer "
                f"before the output); got {self.interp_layer}"
            )
        if not 0.0 <= self.alpha_min <= self.alpha_init <= self.alpha_max <= 1.0:
            raise ValueError(
                f"attack 'semanticadv': need 0 <= alpha_min <= alpha_init <= alpha_max <= 1; got "
                f"{self.alpha_min}, {self.alpha_init}, {self.alpha_max}"
            )
        for key in ("steps", "refine_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"attack 'semanticadv': {key} must be >= 0; got {getattr(self, key)}")

    def _attack(self, x, x_target, *, att_a, att_b):
        if att_a is None or att_b is None:
            raise ValueError("attack 'semanticadv' edits attributes: pass att_a and att_b (0/1, (N, 13))")
        G = self.generator
        mode = G.training
        G.eval()
        G.requires_grad_(False)
        try:
            return self._run(
                G,
                x,
                x_target,
                to_generator_input(att_a, self.attribute_coding).to(x.device),
                to_generator_input(att_b, self.attribute_coding).to(x.device),
            )
        finally:
            G.train(mode)

    def _attribute_only(self, x, *, att_a, att_b):
        """The same AttGAN edit without the attack (Table II's "Attributes Modified"), 8-bit."""
        if att_b is None:
            return None
        with torch.no_grad():
            out = self.generator(x, to_generator_input(att_b, self.attribute_coding).to(x.device))
        return quantise_8bit(out.clamp(-1.0, 1.0))

    def _run(self, G: nn.Module, x: Tensor, x_target: Tensor, c_src: Tensor, c_edit: Tensor) -> Tensor:
        x = x.detach()
        # 1. refinement of the input (SemanticAdv's pre-step): G(x', c_src) should reconstruct x
        x_ref = x.clone()
        if self.refine_steps:
            x_ref.requires_grad_(True)
            opt = torch.optim.Adam([x_ref], lr=self.refine_lr)
            for _ in range(self.refine_steps):
                rec = G.decode(G.encode_unchecked(x_ref), c_src)
                per = F.mse_loss(rec, x, reduction="none").mean(dim=(1, 2, 3)) + F.mse_loss(
                    x_ref, x, reduction="none"
                ).mean(dim=(1, 2, 3))
                opt.zero_grad()
                per.sum().backward()
                opt.step()
                with torch.no_grad():
                    x_ref.clamp_(-1.0, 1.0)
            x_ref = x_ref.detach()
        layer = self.interp_layer
        with torch.no_grad():
            zs = G.encode_unchecked(x_ref)
            e1 = G.decode_layers(zs, c_src)[1][layer]
            e2 = G.decode_layers(zs, c_edit)[1][layer]
            target_emb = self.target_embeddings(x_target)
        # 2. the interpolation tensor, per element of the feature map
        alpha = torch.full_like(e1, self.alpha_init, requires_grad=True)
        opt = torch.optim.Adam([alpha], lr=self.lr)

        def generate() -> tuple[Tensor, Tensor]:
            a = torch.clamp(alpha, self.alpha_min, self.alpha_max)
            mixed = (1.0 - a) * e1 + a * e2
            img = G.decode_layers(zs, c_edit, fuse=lambda i, h: mixed if i == layer else h)[0]
            return img, a

        for _ in range(self.steps):
            img, a = generate()
            feat = torch.stack(
                [
                    F.mse_loss(fr(img), t, reduction="none").mean(dim=1)
                    for fr, t in zip(self.surrogates, target_emb, strict=True)
                ]
            ).mean(0)
            loss = feat + self.tv_weight * tv_squared(a)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            img, _ = generate()
        return quantise_8bit(img.clamp(-1.0, 1.0))
