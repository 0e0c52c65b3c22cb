"""A one-step FGSM written against the Protection interface: the stand-in for "any other scheme" in tests
(shared by tests/experiments/test_evaluation.py and tests/platform/test_remote_fr_eval.py)."""

from __future__ import annotations

import torch
from torch import nn

from erasablemask.experiments.evaluation.metrics import cosine
from erasablemask.experiments.evaluation.protection import Protection


class OneStepFGSM(Protection):
    """One signed-gradient step towards the target on one FR model (Goodfellow et al.; ``eps`` in [-1, 1] units)."""

    name = "fgsm"

    def __init__(self, fr: nn.Module, eps: float) -> None:
        self.fr, self.eps = fr, eps

    def _protect(self, x, x_target, *, att_a, att_b):
        with torch.enable_grad():
            z = x.clone().requires_grad_(True)
            cosine(self.fr(z), self.fr(x_target).detach()).sum().backward()
            return (x + self.eps * z.grad.sign()).clamp(-1, 1)
