"""Targeted FGSM on an ensemble of surrogates (Goodfellow et al. 2015), one signed-gradient step of size ε.

``x_adv = Q(Π(x - ε · sign(∇_x mean_k (1 - cos(F_k(x), F_k(x_t))))))``, with
``Π`` the projection onto the ε-ball and [-1, 1] and ``Q`` the 8-bit
quantisation inside the ball (:mod:`~erasablemask.experiments.attacks.base`).
The same step as PGD (:func:`~erasablemask.experiments.attacks.pgd.signed_gradient_attack`)
with one step and ``α = ε``; random start (R+FGSM, Tramèr et al.: a random
step then ``ε``-step, here the start is uniform in the ball), DI and TI are
options, off by default (MI needs several steps, so FGSM has none).

Default ε: torchattacks' ``FGSM(eps=8/255)`` (Kim, ``torchattacks/attacks/fgsm.py``).
The ErasableMask paper forces ε = 4/255 for FGSM and PGD (§V-A); that value
is set in the comparison config (``experiments/configs/compare/miniworld.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from erasablemask.experiments.attacks.base import AdditiveBudget, Attack
from erasablemask.experiments.attacks.pgd import TransferOptions, signed_gradient_attack
from erasablemask.experiments.attacks.registry import register

__all__ = ["FGSM"]


@register("fgsm")
@dataclass(eq=False)
class FGSM(Attack):
    """Targeted ensemble FGSM. ``eps`` is in units of [0, 1] images.

    Attributes:
        eps: L∞ budget and step (torchattacks default 8/255; the paper's 4/255 is set by the comparison config).
        random_start: start from a uniform point in the ball (off: plain FGSM).
        input_diversity, di_prob, di_resize_rate: DI (off; 0.5, 0.9 as torchattacks DIFGSM).
        translation_invariance, ti_kernel, ti_sigma: TI (off; 7, 3 as RobFR TIM for faces).
        seed: seeds the random start and DI draws.
    """

    eps: float = 8 / 255
    random_start: bool = False
    input_diversity: bool = False
    di_prob: float = 0.5
    di_resize_rate: float = 0.9
    translation_invariance: bool = False
    ti_kernel: int = 7
    ti_sigma: float = 3.0
    seed: int = 0

    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.budget = AdditiveBudget(self.eps)
        self.options = TransferOptions.from_fields(self)

    def _attack(self, x, x_target, *, att_a, att_b):
        return signed_gradient_attack(
            self.surrogates,
            x,
            x_target,
            budget=self.budget,
            steps=1,
            alpha=self.eps,
            random_start=self.random_start,
            opts=self.options,
            seed=self.seed,
            target_emb=self.target_embeddings(x_target),
        )
