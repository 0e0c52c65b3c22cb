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

from erasablemask.experiments.attacks.pgd import SignedGradientAttack
from erasablemask.experiments.attacks.registry import register

__all__ = ["FGSM"]


@register("fgsm")
@dataclass(eq=False)
class FGSM(SignedGradientAttack):
    """Targeted ensemble FGSM: one signed step of size ``eps`` (units of [0, 1] images).

    Fields: :class:`~erasablemask.experiments.attacks.pgd.SignedGradientAttack`'s (``eps``, ``random_start``,
    DI, TI, ``seed``), all off by default (a plain FGSM); no momentum (one step).
    """

    name: ClassVar[str] = "fgsm"

    def _attack(self, x, x_target, *, att_a, att_b):
        return self._signed_steps(x, x_target, steps=1, alpha=self.eps)
