"""Targeted PGD on an ensemble of surrogates, with the field's transfer options (random start, MI, DI, TI).

The loss is ``L(x) = mean_k (1 - cos(F_k(x), F_k(x_t)))`` (competitors.md §0,
per sample), minimised: ``x <- Π(x - α · sign(g))`` with ``Π`` the projection
onto the L∞ ε-ball around the clean face and [-1, 1]
(:class:`~erasablemask.experiments.attacks.base.AdditiveBudget`), after every
step. The returned faces are quantised to 8 bits inside the ball.

Options, each off by default (a plain PGD, as ErasableMask's Table II uses)
and each a field, so the records' hyper-parameters name them:

- ``random_start``: ``x_0 = Π(x + U(-ε, ε))`` (Madry et al.; torchattacks'
  PGD turns it on by default, the issue asks for a plain PGD by default);
- ``momentum`` (MI-FGSM, Dong et al. 2018): ``g <- μ·g + ∇ / mean|∇|`` per
  sample, μ = ``momentum`` (torchattacks MIFGSM ``decay=1.0``); 0 disables;
- ``input_diversity`` (DI, Xie et al. 2019): with probability ``di_prob`` the
  gradient is taken through a random resize to ``[⌊di_resize_rate·W⌋, W)`` and
  a random zero pad back to ``W`` (torchattacks DIFGSM ``resize_rate=0.9``,
  ``diversity_prob=0.5``); the pad value is 0, mid-grey in [-1, 1];
- ``translation_invariance`` (TI, Dong et al. 2019): the gradient is
  convolved depthwise with a normalised Gaussian of ``ti_kernel`` pixels and
  ``ti_sigma`` (RobFR ``TIM.py`` for faces: 7 and 3; ImageNet TI uses 15).

Defaults: torchattacks (Kim, ``torchattacks/attacks/pgd.py``): ε = 8/255,
α = 2/255, 10 steps. The ErasableMask paper forces ε = 4/255 for FGSM and
PGD (§V-A); that value is set in the comparison config
(``experiments/configs/compare/miniworld.yaml``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from erasablemask.experiments.attacks.base import AdditiveBudget, Attack, ensemble_cos_loss
from erasablemask.experiments.attacks.registry import register

__all__ = ["PGD", "SignedGradientAttack", "TransferOptions", "signed_gradient_attack"]


@dataclass(frozen=True)
class TransferOptions:
    """The transfer tricks of a signed-gradient attack (module docstring)."""

    momentum: float = 0.0
    input_diversity: bool = False
    di_prob: float = 0.5
    di_resize_rate: float = 0.9
    translation_invariance: bool = False
    ti_kernel: int = 7
    ti_sigma: float = 3.0

    def __post_init__(self) -> None:
        if self.momentum < 0:
            raise ValueError(f"momentum must be >= 0 (0 disables MI); got {self.momentum}")
        if not 0.0 <= self.di_prob <= 1.0:
            raise ValueError(f"di_prob must be in [0, 1]; got {self.di_prob}")
        if not 0.0 < self.di_resize_rate < 1.0:
            raise ValueError(f"di_resize_rate must be in (0, 1) (0.9: resize to 90-100 %); got {self.di_resize_rate}")
        if self.ti_kernel < 1 or self.ti_kernel % 2 == 0:
            raise ValueError(f"ti_kernel must be a positive odd number of pixels; got {self.ti_kernel}")
        if self.ti_sigma <= 0:
            raise ValueError(f"ti_sigma must be > 0; got {self.ti_sigma}")


def _diverse(x: Tensor, opts: TransferOptions, gen: torch.Generator) -> Tensor:
    """DI: random resize to [⌊r·W⌋, W) and random zero pad back to W, with probability ``di_prob`` (whole batch)."""
    if float(torch.rand((), generator=gen)) >= opts.di_prob:
        return x
    h, w = x.shape[-2:]
    lo = max(1, int(opts.di_resize_rate * w))
    size = int(torch.randint(lo, w, (), generator=gen)) if lo < w else w
    small = F.interpolate(x, size=(size * h // w, size), mode="nearest")
    pad_h, pad_w = h - small.shape[-2], w - small.shape[-1]
    top = int(torch.randint(0, pad_h + 1, (), generator=gen))
    left = int(torch.randint(0, pad_w + 1, (), generator=gen))
    return F.pad(small, (left, pad_w - left, top, pad_h - top), value=0.0)


def _gaussian_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).to(device=device, dtype=dtype).expand(3, 1, size, size).contiguous()


def signed_gradient_attack(
    surrogates,
    x: Tensor,
    x_target: Tensor,
    *,
    budget: AdditiveBudget,
    steps: int,
    alpha: float,
    random_start: bool,
    opts: TransferOptions,
    seed: int,
    target_emb: list[Tensor],
) -> Tensor:
    """Targeted iterative signed-gradient attack (FGSM with ``steps=1, alpha=eps``); returns quantised faces.

    ``alpha`` is in [0, 1]-image units like ``budget.eps``.
    """
    gen = torch.Generator().manual_seed(seed)
    x = x.detach()
    x_adv = budget.random_start(x, gen) if random_start else x.clone()
    g = torch.zeros_like(x)
    kernel = _gaussian_kernel(opts.ti_kernel, opts.ti_sigma, x.device, x.dtype) if opts.translation_invariance else None
    for _ in range(steps):
        x_adv.requires_grad_(True)
        x_in = _diverse(x_adv, opts, gen) if opts.input_diversity else x_adv
        loss = ensemble_cos_loss(surrogates, x_in, target_emb).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        if kernel is not None:
            grad = F.conv2d(grad, kernel, padding=opts.ti_kernel // 2, groups=3)
        if opts.momentum > 0:
            grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            g = opts.momentum * g + grad
            grad = g
        x_adv = budget.project(x_adv.detach() - 2.0 * alpha * grad.sign(), x)
    return budget.quantise(x_adv, x)


@dataclass(eq=False)
class SignedGradientAttack(Attack):
    """What FGSM and PGD share: the budget, the random start, DI, TI and the seed (their typed fields).

    Attributes:
        eps: L∞ budget in units of [0, 1] images (torchattacks default 8/255; the paper's 4/255 is set by
            the comparison config).
        random_start: start from a uniform point in the ball (off: a plain FGSM/PGD).
        input_diversity: DI on/off; ``di_prob``, ``di_resize_rate`` its parameters (0.5, 0.9: torchattacks DIFGSM).
        translation_invariance: TI on/off; ``ti_kernel``, ``ti_sigma`` its Gaussian (7, 3: RobFR TIM for faces).
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

    def __post_init__(self) -> None:
        super().__post_init__()
        self.budget = AdditiveBudget(self.eps)
        self.options = TransferOptions(
            self._momentum(),
            self.input_diversity, self.di_prob, self.di_resize_rate,
            self.translation_invariance, self.ti_kernel, self.ti_sigma,
        )

    def _momentum(self) -> float:
        """MI decay μ of the steps (a one-step FGSM has none)."""
        return 0.0

    def _signed_steps(self, x: Tensor, x_target: Tensor, *, steps: int, alpha: float) -> Tensor:
        return signed_gradient_attack(
            self.surrogates,
            x,
            x_target,
            budget=self.budget,
            steps=steps,
            alpha=alpha,
            random_start=self.random_start,
            opts=self.options,
            seed=self.seed,
            target_emb=self.target_embeddings(x_target),
        )


@register("pgd")
@dataclass(eq=False)
class PGD(SignedGradientAttack):
    """Targeted ensemble PGD (module docstring). ``eps`` and ``alpha`` are in units of [0, 1] images.

    Attributes (besides :class:`SignedGradientAttack`'s ``eps``, ``random_start``, DI, TI, ``seed``):
        alpha: step size (torchattacks default 2/255).
        steps: iterations (torchattacks default 10).
        momentum: MI decay μ (0: off; MI-FGSM uses 1.0).
    """

    alpha: float = 2 / 255
    steps: int = 10
    momentum: float = 0.0

    name: ClassVar[str] = "pgd"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ValueError(f"attack '{self.name}': steps must be >= 1; got {self.steps}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"attack '{self.name}': alpha must be in (0, 1] ([0, 1]-image units); got {self.alpha}")

    def _momentum(self) -> float:
        return self.momentum

    def _attack(self, x, x_target, *, att_a, att_b):
        return self._signed_steps(x, x_target, steps=self.steps, alpha=self.alpha)
