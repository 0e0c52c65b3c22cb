"""The competitors' common base: an :class:`Attack` is a :class:`Protection` with typed hyper-parameters.

Every competitor (FGSM, PGD, Sibling-Attack, SemanticAdv, AdvFaces, GMAA)
is a small dataclass subclass of :class:`Attack`: its hyper-parameters are
typed fields whose defaults come from the official code (the source is cited
beside each field), and the FR surrogates it attacks are its first field.
It is called as ``attack(x, x_target)`` (images ``(N, 3, H, W)`` in [-1, 1])
and, being a ``Protection``, is scored by the same evaluation and records as
ErasableMask.

Additive budgets (:class:`AdditiveBudget`), stated once so they cannot drift:

- ``eps`` is in the units of [0, 1] images, the field's convention (4/255 means
  four 8-bit levels); on our [-1, 1] tensors the ball has radius ``2 * eps``;
- :meth:`AdditiveBudget.project` maps an iterate onto the L∞ ε-ball around the
  clean image and the valid range [-1, 1]; attacks call it after every step;
- :meth:`AdditiveBudget.quantise` returns the image a saved 8-bit file would
  hold: each pixel is rounded to the nearest level *inside* the ball (rounding
  to the nearest level alone can step half a level outside it), so
  ``|q - x| <= eps`` holds exactly in [0, 1] units when ``x`` is itself 8-bit.
  Where no level lies inside the ball (a non-8-bit clean pixel with ``eps``
  under half a level) the clean pixel's nearest level is used.

Success is re-checked on what is returned: after each call
:attr:`Attack.last_check` holds, per surrogate, the cosine similarity of the
returned (quantised) faces to the target faces and whether it clears the
surrogate's threshold at FAR 0.01, never the optimiser's internal state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.experiments.evaluation.protection import Protection

__all__ = ["Attack", "AdditiveBudget", "SuccessCheck", "ensemble_cos_loss", "quantise_8bit", "CHECK_FAR"]

CHECK_FAR = 0.01  # the FAR whose threshold the success re-check uses (ASR's τ1, evaluation.asr_far's default)
LEVELS = 255  # 8-bit levels in [0, 1]


@dataclass(frozen=True)
class SuccessCheck:
    """Success of one call, measured on the returned images against the surrogates.

    Attributes:
        cos: per surrogate name, ``(N,)`` cosine similarity of the returned faces to the target faces.
        success: per surrogate name, ``(N,)`` bool, ``cos`` above the surrogate's threshold at
            :data:`CHECK_FAR` (absent for a surrogate without that threshold).
    """

    cos: dict[str, Tensor]
    success: dict[str, Tensor]


def ensemble_cos_loss(surrogates: Sequence[nn.Module], x: Tensor, target_emb: Sequence[Tensor]) -> Tensor:
    """Per-sample ``1 - cos(F_k(x), F_k(x_t))`` averaged over the surrogates, shape ``(N,)`` (competitors.md §0)."""
    losses = [1.0 - F.cosine_similarity(fr(x), t, dim=1) for fr, t in zip(surrogates, target_emb, strict=True)]
    return torch.stack(losses).mean(0)


def quantise_8bit(x: Tensor) -> Tensor:
    """``x`` in [-1, 1] rounded to the nearest 8-bit level, as a saved image holds it (non-additive schemes)."""
    return (((x.detach().double().clamp(-1, 1) + 1.0) * (LEVELS / 2.0)).round() / (LEVELS / 2.0) - 1.0).to(x.dtype)


@dataclass(frozen=True)
class AdditiveBudget:
    """An L∞ budget ``eps`` in [0, 1]-image units, applied to [-1, 1] tensors (module docstring).

    Attributes:
        eps: the radius in units of [0, 1] images (4/255 = four 8-bit levels).
    """

    eps: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.eps <= 1.0) or math.isnan(self.eps):
            raise ValueError(f"eps must be in [0, 1] (units of [0, 1] images, e.g. 4/255); got {self.eps}")

    @property
    def radius(self) -> float:
        """The radius on [-1, 1] tensors: ``2 * eps``."""
        return 2.0 * self.eps

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``x_adv`` clipped onto the ε-ball around ``x`` and into [-1, 1]."""
        r = self.radius
        return torch.minimum(torch.maximum(x_adv, x - r), x + r).clamp(-1.0, 1.0)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x + U(-r, r)`` projected: PGD's random start (Madry et al.)."""
        u = torch.rand(x.shape, generator=generator, device="cpu", dtype=x.dtype).to(x.device)  # device-ok: CPU RNG
        return self.project(x + (2.0 * u - 1.0) * self.radius, x)

    def quantise(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The 8-bit image a saved file would hold, each level inside the ε-ball and [0, 255]."""
        level = (x_adv.detach().double() + 1.0) * (LEVELS / 2.0)
        clean = (x.detach().double() + 1.0) * (LEVELS / 2.0)
        e = self.eps * LEVELS
        lo = torch.ceil(clean - e - 1e-9).clamp(0, LEVELS)
        hi = torch.floor(clean + e + 1e-9).clamp(0, LEVELS)
        q = torch.minimum(torch.maximum(level.round(), lo), hi)
        q = torch.where(lo > hi, clean.round().clamp(0, LEVELS), q)  # no level inside the ball
        return (q / (LEVELS / 2.0) - 1.0).to(x_adv.dtype)


@dataclass(eq=False)
class Attack(Protection):
    """A competitor: ``attack(x, x_target)`` -> protected faces, a :class:`Protection` with typed hyper-parameters.

    Subclasses are dataclasses: their fields after ``surrogates`` are the
    hyper-parameters (typed, defaults from the official code), and they
    implement :meth:`_attack`. The base checks the images, runs the attack
    with gradients enabled and the surrogates frozen, and re-checks success on
    the returned images (:attr:`last_check`).

    Attributes:
        surrogates: the white-box FR models attacked (FaceRecognizer: [-1, 1] in, unit embeddings out).
        name: the registry name, also ``method`` in the records.
        last_check: success of the last call on what it returned (None before the first call).
    """

    surrogates: Sequence[nn.Module]
    last_check: SuccessCheck | None = field(default=None, init=False, repr=False)

    name: ClassVar[str] = ""
    NOT_HPARAMS: ClassVar[frozenset[str]] = frozenset({"surrogates", "last_check"})

    def __post_init__(self) -> None:
        if not self.surrogates and self.needs_surrogates:
            raise ValueError(f"attack '{self.name}' needs at least one surrogate FR model; got none")
        for f in dataclasses.fields(self):
            if f.name in self.NOT_HPARAMS:
                continue
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isnan(value):
                raise ValueError(f"attack '{self.name}': hyper-parameter {f.name} is NaN")

    needs_surrogates: ClassVar[bool] = True

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        """The hyper-parameter names (the init fields after ``surrogates``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name not in cls.NOT_HPARAMS)

    def hparams(self) -> dict[str, Any]:
        """The scalar hyper-parameters and their values (what ``compare`` logs as MLflow params); objects such
        as a generator network are left out."""
        values = {k: getattr(self, k) for k in self.hparam_names()}
        return {k: v for k, v in values.items() if v is None or isinstance(v, (bool, int, float, str))}

    def __call__(
        self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None = None, att_b: Tensor | None = None
    ) -> Tensor:
        """Protected faces ``(N, 3, H, W)`` in [-1, 1] (same as :meth:`protect`)."""
        return self.protect(x, x_target, att_a=att_a, att_b=att_b)

    # ------------------------------------------------------------------ what an attack implements

    def _attack(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        """The attack itself: returns the published images (quantised, for additive ones)."""
        raise NotImplementedError(f"attack '{self.name}' does not implement _attack")

    # ------------------------------------------------------------------ shared machinery

    def _protect(self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None, att_b: Tensor | None) -> Tensor:
        modes = [m.training for m in self.surrogates]
        flags = [[p.requires_grad for p in m.parameters()] for m in self.surrogates]
        try:
            for m in self.surrogates:
                m.eval()
                m.requires_grad_(False)
            with torch.enable_grad():
                out = self._attack(x, x_target, att_a=att_a, att_b=att_b).detach()
            with torch.no_grad():
                self.last_check = self.check_success(out, x_target)
        finally:
            for m, mode, fl in zip(self.surrogates, modes, flags, strict=True):
                m.train(mode)
                for p, r in zip(m.parameters(), fl, strict=True):
                    p.requires_grad_(r)
        return out

    def target_embeddings(self, x_target: Tensor) -> list[Tensor]:
        """``F_k(x_target)`` per surrogate, detached (computed once per call)."""
        with torch.no_grad():
            return [fr(x_target).detach() for fr in self.surrogates]

    def check_success(self, x_out: Tensor, x_target: Tensor) -> SuccessCheck:
        """Cosine to the target and success at :data:`CHECK_FAR` per surrogate, on ``x_out`` as returned."""
        cos: dict[str, Tensor] = {}
        success: dict[str, Tensor] = {}
        for i, fr in enumerate(self.surrogates):
            key = getattr(getattr(fr, "spec", None), "name", None) or f"surrogate{i}"
            c = F.cosine_similarity(fr(x_out), fr(x_target), dim=1).cpu()
            cos[key] = c
            thr = getattr(getattr(fr, "spec", None), "thresholds", {}).get(CHECK_FAR)
            if thr is not None:
                success[key] = c > thr
        return SuccessCheck(cos=cos, success=success)
