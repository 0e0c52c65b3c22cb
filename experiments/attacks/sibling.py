"""Sibling-Attack (Li et al., CVPR 2023): alternating FR / attribute-recognition meta-optimisation.

Official code: ``Tencent/TFace`` ``security/tasks/Adv-Attack-Defense/Sibling-Attack/attack.py``
(``sibling_attack``) and ``configs/config.yaml`` (competitors.md §4). For
outer loop ``i = 1 .. outer_loops``, with ``Π`` the projection onto the L∞
ε-ball around the clean face and [-1, 1]:

- odd ``i`` ("AR branch"): ``inner_loops`` signed steps of size
  ``(1 - γ) · inner_lr`` on the AR loss from the current image, keeping each
  iterate; the FR gradients at those iterates are summed into ``A``; from the
  last iterate ``x'``, one outer step
  ``x <- Π(x' - (1 - γ) · α · sign(∇L_FR(x') + w · A))``;
- even ``i`` ("FR branch"): the same with the tasks swapped: inner FR steps of
  size ``γ · inner_lr``, AR gradients summed, outer AR step of size ``γ · α``.

``L_FR = mean_k (1 - cos(F_k(x), F_k(x_t)))`` over the surrogates (the
official code attacks one IR-152); ``L_AR = 1 - cos`` of the flattened
intermediate features of the attribute-recognition model for ``x`` and
``x_t`` (official: the output of ``ir_152.body.49``, the last bottleneck, of
an IR-152 fine-tuned for CelebA attributes from the FR weights). Losses are
per sample (the official code runs batch 1; its flatten merges the batch).

Here the AR model is any module whose ``features`` attribute maps images to
an intermediate map (the mini-world
:class:`~erasablemask.experiments.evaluation.attribute_classifier.AttributeClassifier`:
its last conv block is hooked, the counterpart of ``body.49``); for real data
an IR-152-style AR trunk plugs in the same way. Note: on the mini-world that
classifier is also the evaluation's attribute judge; Sibling-Attack does not
edit attributes, so its attribute accuracy is not reported as a result.

Units: the official values are in [-1, 1] units (ε = 0.15, α = 0.01, inner
step 1/255); the fields below are in units of [0, 1] images, so halved:
ε = 0.075 (≈ 19/255), α = 0.005, ``inner_lr`` = 0.5/255. The returned faces
are quantised to 8 bits inside the ε-ball.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.experiments.attacks.base import AdditiveBudget, Attack, ensemble_cos_loss
from erasablemask.experiments.attacks.registry import register

__all__ = ["SiblingAttack"]


@register("sibling")
@dataclass(eq=False)
class SiblingAttack(Attack):
    """Sibling-Attack (module docstring). Budgets and steps in units of [0, 1] images.

    Attributes:
        ar_model: the attribute-recognition model (its ``features`` give the attacked map); required.
        eps: L∞ budget (official 0.15 in [-1, 1] units = 0.075 here).
        alpha: outer step (official 0.01 = 0.005 here), scaled by γ or 1 - γ.
        inner_lr: inner step (official 1/255 = 0.5/255 here), scaled likewise.
        outer_loops: T (official 200).
        inner_loops: J (official 5).
        gamma: task balance γ (official 0.1).
        w: weight of the other task's summed inner gradients (official 1e-4, hard-coded there).
    """

    ar_model: nn.Module | None = None
    eps: float = 0.075
    alpha: float = 0.005
    inner_lr: float = 0.5 / 255
    outer_loops: int = 200
    inner_loops: int = 5
    gamma: float = 0.1
    w: float = 1e-4

    name: ClassVar[str] = "sibling"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ar_model is None:
            raise ValueError(
                "attack 'sibling' needs `ar_model`, an attribute-recognition model with a `features` "
                "trunk (mini-world: ensure_attribute_classifier(cfg)); pass ar_model=..."
            )
        if not isinstance(getattr(self.ar_model, "features", None), nn.Module):
            raise ValueError(
                f"attack 'sibling': ar_model {type(self.ar_model).__name__} has no `features` module "
                f"to attack; wrap it so that `.features(x)` gives its intermediate map"
            )
        self.budget = AdditiveBudget(self.eps)
        for key in ("outer_loops", "inner_loops"):
            if getattr(self, key) < 1:
                raise ValueError(f"attack 'sibling': {key} must be >= 1; got {getattr(self, key)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"attack 'sibling': gamma must be in [0, 1]; got {self.gamma}")

    def _attack(self, x, x_target, *, att_a, att_b):
        ar = self.ar_model
        mode = ar.training
        ar.eval()
        ar.requires_grad_(False)
        try:
            return self._run(x.detach(), x_target)
        finally:
            ar.train(mode)

    def _run(self, x: Tensor, x_target: Tensor) -> Tensor:
        fr_target = self.target_embeddings(x_target)
        with torch.no_grad():
            ar_target = self.ar_model.features(x_target).flatten(1)  # victim features cached (official: recomputed)

        def fr_loss(z: Tensor) -> Tensor:
            return ensemble_cos_loss(self.surrogates, z, fr_target).sum()

        def ar_loss(z: Tensor) -> Tensor:
            return (1.0 - F.cosine_similarity(self.ar_model.features(z).flatten(1), ar_target, dim=1)).sum()

        def grad(loss_fn, z: Tensor) -> Tensor:
            z = z.detach().requires_grad_(True)
            return torch.autograd.grad(loss_fn(z), z)[0]

        r = 2.0  # [0, 1]-image units -> our [-1, 1] tensors
        x_adv = x.clone()
        for i in range(1, self.outer_loops + 1):
            if i % 2 == 0:  # FR inner steps, AR outer step
                inner, outer, scale = fr_loss, ar_loss, self.gamma
            else:  # AR inner steps, FR outer step
                inner, outer, scale = ar_loss, fr_loss, 1.0 - self.gamma
            z = x_adv
            iterates = []
            for _ in range(self.inner_loops):
                z = self.budget.project(z - r * scale * self.inner_lr * grad(inner, z).sign(), x)
                iterates.append(z)
            aggregate = sum(grad(outer, it) for it in iterates)
            z = iterates[-1]
            step = grad(outer, z) + self.w * aggregate
            x_adv = self.budget.project(z - r * scale * self.alpha * step.sign(), x)
        return self.budget.quantise(x_adv, x)
