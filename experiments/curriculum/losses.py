"""The paper's losses (§IV, Eq. 3-5, 8, 11-16) as pure tensor functions.

Conventions: images are ``(N, 3, H, W)`` in ``[-1, 1]``; logits are raw
(pre-sigmoid); attribute *labels* for the losses are 0/1 (``att01``), not the
±0.5 generator code. Every batch loss is a 0-dim tensor averaged over the
batch unless its docstring says otherwise. Where the paper is ambiguous the
choice is a keyword argument whose default is documented.

The meta-auxiliary attack's losses (Eq. 9, 10, 12) live in
:mod:`erasablemask.experiments.attacks.meta_auxiliary`; the adaptive weights of Eq. 11
that it uses are :class:`AdaptiveWeights` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # only read as attributes: keeps this module importable without pydantic (GPU image)
    from erasablemask.experiments.config.schema import Stage1Config, Stage2Config, Stage3Config

__all__ = [
    "discriminator_loss", "generator_gan_loss", "gradient_penalty", "attribute_loss", "reconstruction_loss",
    "perturbation_loss", "erasion_loss", "AdaptiveWeights", "stage1_generator_loss",
    "stage1_discriminator_loss", "stage2_loss", "stage3_loss",
]

GanKind = Literal["log", "wgan_gp"]


def _check_kind(kind: str) -> None:
    if kind not in ("log", "wgan_gp"):
        raise ValueError(f"GAN loss `kind` must be 'log' (Eq. 3) or 'wgan_gp' (AttGAN); got {kind!r}")


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}")


# --- Eq. 3: adversarial (real/fake) losses -----------------------------------------------------------------------


def discriminator_loss(real_logit: Tensor, fake_logit: Tensor, *, kind: GanKind = "log") -> Tensor:
    """``L_D`` (Eq. 3) from D_G's logits on real ``x_cov^{att_a}`` and fake ``x_adv^{att_b}``.

    ``"log"``: ``-log D(real) - log(1 - D(fake))`` with ``D = sigmoid(logit)``,
    each term averaged over the batch. ``"wgan_gp"``: AttGAN's critic loss
    ``mean(fake) - mean(real)``; add ``λ_gp · gradient_penalty(...)`` yourself.
    """
    _check_kind(kind)
    if kind == "log":
        return (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    return fake_logit.mean() - real_logit.mean()


def generator_gan_loss(fake_logit: Tensor, *, kind: GanKind = "log") -> Tensor:
    """``L_G`` (Eq. 3): ``-log D(fake)`` (``"log"``) or ``-mean(fake)`` (``"wgan_gp"``), batch mean."""
    _check_kind(kind)
    if kind == "log":
        return F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
    return -fake_logit.mean()


def gradient_penalty(
    D: Callable[[Tensor], Tensor | tuple[Tensor, ...]],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty ``mean((‖∇_x̂ D_G(x̂)‖₂ - 1)²)`` on random interpolates (as AttGAN-PyTorch).

    Args:
        D: the discriminator; if it returns a tuple (AttGAN's ``(d_g, d_att)``) the first element is used.
        real, fake: ``(N, 3, H, W)`` in [-1, 1]; ``fake`` is detached here.
        generator: optional RNG for the interpolation weights (one per sample).

    Returns:
        0-dim tensor with a graph to D's parameters (call inside D's step).
    """
    _check_pair(real, fake, "`real` and `fake`")
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device="cpu").to(real)  # device-ok: the CPU RNG, for determinism
    x_hat = (real.detach() + alpha * (fake.detach() - real.detach())).requires_grad_(True)
    out = D(x_hat)
    out = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


# --- Eq. 4, 5: attribute and reconstruction losses ----------------------------------------------------------------


def attribute_loss(att_logits: Tensor, att01: Tensor, *, reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """``L_att^D`` / ``L_att^G`` (Eq. 4): binary cross-entropy of D_att's logits against 0/1 labels.

    Eq. 4 sums over the n attributes: ``reduction="sum"`` (default) is the sum
    over attributes, then the mean over the batch. ``"mean"`` also averages over
    attributes (AttGAN-PyTorch's ``F.binary_cross_entropy_with_logits``), i.e. the
    sum divided by n.

    Args:
        att_logits: ``(N, n)`` logits of D_att (on ``x_cov^{att_a}`` for L_att^D, on ``x_adv^{att_b}`` for L_att^G).
        att01: ``(N, n)`` labels in {0, 1} (``att_a`` or ``att_b``; not the ±0.5 generator code).
    """
    _check_pair(att_logits, att01, "`att_logits` and `att01`")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"`reduction` must be 'sum' (Eq. 4) or 'mean' (AttGAN); got {reduction!r}")
    if float(att01.min()) < 0 or float(att01.max()) > 1:
        raise ValueError("`att01` must hold 0/1 labels; convert a ±0.5 code with (a > 0).float()")
    per = F.binary_cross_entropy_with_logits(att_logits, att01.to(att_logits.dtype), reduction="none")
    per_sample = per.sum(dim=1) if reduction == "sum" else per.mean(dim=1)
    return per_sample.mean()


def reconstruction_loss(x_rec: Tensor, x: Tensor) -> Tensor:
    """``L_rec`` (Eq. 5): the "L1 loss", the mean absolute error over all values (as AttGAN-PyTorch).

    Args:
        x_rec: ``G_dec(G_enc(x), att_a)``, ``(N, 3, H, W)`` in [-1, 1].
        x: ``x_cov^{att_a}``, same shape.
    """
    _check_pair(x_rec, x, "`x_rec` and `x`")
    return F.l1_loss(x_rec, x)


# --- Eq. 8, 13: perturbation budget and erasion ---------------------------------------------------------------


def _per_image_l2(a: Tensor, b: Tensor) -> Tensor:
    # vector_norm's backward is 0 (not NaN) at a zero difference: stage 2 starts with x_adv == x_cov_b.
    return torch.linalg.vector_norm((a - b).flatten(1), dim=1)


def perturbation_loss(
    x_adv: Tensor,
    x_cov_b: Tensor,
    *,
    sigma1: float = 30.0,
    units: Literal["unit_per_image", "pixels255_per_image"] = "unit_per_image",
    scale_with_size: bool = True,
    hinge: Literal["per_image", "batch"] = "per_image",
) -> Tensor:
    """``L_perb = max(σ1, ‖x_adv^{att_b} - x_cov^{att_b}‖₂)`` (Eq. 8).

    Units (``Stage2Config.perb_units``): ``"unit_per_image"`` takes the L2 norm
    over one image's 3·H·W values in [-1, 1]; at 256² σ1 = 30 is then an RMS
    deviation of 30/√196608 ≈ 0.068 (≈ 8.7/255 grey levels), a plausible
    budget. ``"pixels255_per_image"`` measures the difference in [0, 255] grey
    levels (×127.5), making σ1 = 30 an RMS of 0.07 grey levels.
    With ``scale_with_size`` σ1 is multiplied by √(H·W)/256, keeping the RMS
    budget of 256² images at other sizes.

    ``hinge="per_image"`` (default, our choice) applies the max to each image,
    then averages over the batch, so one image's slack cannot pay for another's
    excess; ``"batch"`` applies it once to the batch-mean norm.

    Returns:
        0-dim tensor ≥ σ1 (in the chosen units); zero gradient while under budget.
    """
    _check_pair(x_adv, x_cov_b, "`x_adv` and `x_cov_b`")
    if units not in ("unit_per_image", "pixels255_per_image"):
        raise ValueError(f"`units` must be 'unit_per_image' or 'pixels255_per_image'; got {units!r}")
    if hinge not in ("per_image", "batch"):
        raise ValueError(f"`hinge` must be 'per_image' or 'batch'; got {hinge!r}")
    norms = _per_image_l2(x_adv, x_cov_b)
    if units == "pixels255_per_image":
        norms = norms * 127.5
    h, w = x_adv.shape[-2:]
    sigma = sigma1 * math.sqrt(h * w) / 256.0 if scale_with_size else sigma1
    if hinge == "batch":
        return torch.clamp(norms.mean(), min=sigma)
    return torch.clamp(norms, min=sigma).mean()


def erasion_loss(x_rec: Tensor, x: Tensor, *, reduction: Literal["sum", "mean"] = "mean") -> Tensor:
    """``L_era = Σ_n ‖x_rec(n) - x_cov(n)‖₂`` (Eq. 13), the per-image L2 norm over 3·H·W values in [-1, 1].

    Args:
        x_rec: ``R(x_adv)``, ``(N, 3, H, W)`` in [-1, 1].
        x: ``x_cov^{att_a}``, same shape.
        reduction: ``"sum"`` over the batch (Eq. 13 literally, scales with the
            batch size) or ``"mean"`` (default, ``Stage2Config.era_reduction``).
    """
    _check_pair(x_rec, x, "`x_rec` and `x`")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"`reduction` must be 'sum' (Eq. 13) or 'mean'; got {reduction!r}")
    norms = _per_image_l2(x_rec, x)
    return norms.sum() if reduction == "sum" else norms.mean()


# --- Eq. 11: self-adaptive surrogate weights -----------------------------------------------------------------


class AdaptiveWeights:
    """``w_i(t)`` of Eq. 11 from each surrogate's epoch-mean loss history.

    ``rate_i(t) = Mean(L_FR_i{t-1}) / Mean(L_FR_i{t-2})`` and
    ``w_i(t) = exp(softmax_i(rate(t)))``. The history starts with
    ``L{0} = L{1} = 1`` (Algorithm 1, line 1), so before the first
    :meth:`end_epoch` every rate is 1 and every weight is ``exp(1/K)``.
    A surrogate whose loss falls fastest (smallest rate: the easiest to attack)
    gets the smallest weight.

    Usage per epoch: ``record_batch(name, L_pri)`` for every batch and
    surrogate (``L_pri`` of Eq. 9), then ``end_epoch()``; :meth:`weights` gives
    the weights for the next epoch.

    Args:
        names: surrogate names (K ≥ 1).
        enabled: False gives weight 1 for every surrogate (``AttackConfig.adaptive_weights``)
            while still recording the history.
    """

    def __init__(self, names: Iterable[str], *, enabled: bool = True) -> None:
        self.names = list(names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"`names` must be non-empty and unique surrogate names; got {self.names}")
        self.enabled = bool(enabled)
        self.history: dict[str, list[float]] = {n: [1.0, 1.0] for n in self.names}  # Alg. 1 line 1
        self._sum = {n: 0.0 for n in self.names}
        self._count = {n: 0.0 for n in self.names}

    def _check_name(self, name: str) -> None:
        if name not in self.history:
            raise KeyError(f"unknown surrogate '{name}'; AdaptiveWeights was built for {self.names}")

    def rates(self) -> dict[str, float]:
        """``rate_i(t)`` (Eq. 11) from the last two completed epochs."""
        out = {}
        for n, h in self.history.items():
            if h[-2] <= 0:
                raise ValueError(f"surrogate '{n}' had epoch-mean loss {h[-2]} ≤ 0; Eq. 11's rate is undefined")
            out[n] = h[-1] / h[-2]
        return out

    def weights(self) -> dict[str, float]:
        """``w_i(t)`` (Eq. 11) for every surrogate; all 1.0 when disabled."""
        if not self.enabled:
            return {n: 1.0 for n in self.names}
        rates = self.rates()
        soft = torch.softmax(torch.tensor([rates[n] for n in self.names], dtype=torch.float64), dim=0)
        return {n: math.exp(float(s)) for n, s in zip(self.names, soft)}

    def record_batch(self, name: str, loss: float | Tensor, n: float = 1.0) -> None:
        """Add one batch's mean ``L_FR_name`` (weight ``n``, e.g. the batch size) to the running epoch mean."""
        self._check_name(name)
        value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        if not math.isfinite(value):
            raise ValueError(f"loss of surrogate '{name}' is {value}; check the step that produced it")
        self._sum[name] += value * float(n)
        self._count[name] += float(n)

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch: append each surrogate's epoch mean to its history and reset; returns the means."""
        missing = [n for n in self.names if self._count[n] == 0]
        if missing:
            raise ValueError(f"no losses recorded this epoch for surrogate(s) {missing}; call record_batch first")
        means = {n: self._sum[n] / self._count[n] for n in self.names}
        for n, m in means.items():
            self.history[n].append(m)
            self._sum[n] = self._count[n] = 0.0
        return means

    def state_dict(self) -> dict[str, Tensor]:
        """Flat float64 tensors (safetensors-ready): ``<name>.history``, ``<name>.sum``, ``<name>.count``."""
        out: dict[str, Tensor] = {}
        for n in self.names:
            out[f"{n}.history"] = torch.tensor(self.history[n], dtype=torch.float64)
            out[f"{n}.sum"] = torch.tensor(self._sum[n], dtype=torch.float64)
            out[f"{n}.count"] = torch.tensor(self._count[n], dtype=torch.float64)
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from :meth:`state_dict`; refuses a state built for other surrogates, naming them."""
        saved = sorted({k.rsplit(".", 1)[0] for k in state})
        if saved != sorted(self.names):
            raise ValueError(f"AdaptiveWeights state is for surrogates {saved}, this run uses {sorted(self.names)}; "
                             "resume with the same attack.surrogates")
        for n in self.names:
            self.history[n] = [float(v) for v in state[f"{n}.history"].tolist()]
            self._sum[n] = float(state[f"{n}.sum"])
            self._count[n] = float(state[f"{n}.count"])


# --- Eq. 14-16: stage totals -------------------------------------------------------------------------------


def _terms(total: Tensor, **terms: Tensor) -> tuple[Tensor, dict[str, float]]:
    logged = {f"L_{k}": float(v.detach()) for k, v in terms.items()}
    logged["L_total"] = float(total.detach())
    return total, logged


def stage1_generator_loss(*, l_rec: Tensor, l_att: Tensor, l_G: Tensor, cfg: Stage1Config
                          ) -> tuple[Tensor, dict[str, float]]:
    """Eq. 14: ``L1 = λ_rec L_rec + λ_att L_att^G + λ_G L_G`` (G_enc, G_dec's step).

    Returns:
        ``(total, {"L_rec", "L_att_G", "L_G", "L_total"})``, the dict holding unweighted floats.
    """
    total = cfg.lambda_rec * l_rec + cfg.lambda_att * l_att + cfg.lambda_G * l_G
    return _terms(total, rec=l_rec, att_G=l_att, G=l_G)


def stage1_discriminator_loss(*, l_D: Tensor, l_att_D: Tensor, cfg: Stage1Config, gp: Tensor | None = None
                              ) -> tuple[Tensor, dict[str, float]]:
    """D's stage-1 loss: ``L_D + λ_att_D L_att^D (+ λ_gp GP for wgan_gp)`` (Eq. 3, 4).

    Raises:
        ValueError: ``cfg.gan_loss == "wgan_gp"`` and no ``gp`` (from :func:`gradient_penalty`) was given.
    """
    total = l_D + cfg.lambda_att_D * l_att_D
    terms = {"D": l_D, "att_D": l_att_D}
    if cfg.gan_loss == "wgan_gp":
        if gp is None:
            raise ValueError("stage1.gan_loss is 'wgan_gp': pass gp=gradient_penalty(D, real, fake)")
        total = total + cfg.gradient_penalty * gp
        terms["gp"] = gp
    return _terms(total, **terms)


def stage2_loss(*, l_att: Tensor, l_rec: Tensor, l_G: Tensor, l_adv: Tensor, l_era: Tensor, l_perb: Tensor,
                cfg: Stage2Config) -> tuple[Tensor, dict[str, float]]:
    """Eq. 15: ``λ_att L_att^G + λ_rec L_rec + λ_G L_G + λ_adv L_adv + λ_era L_era + λ_perb L_perb``.

    Which images ``L_att^G``, ``L_G`` and ``L_rec`` are computed on in stage 2 is
    the caller's decision (G is frozen, so Eq. 5's ``L_rec`` on G alone carries
    no gradient); this function only weights them.

    Returns:
        ``(total, {"L_att_G", "L_rec", "L_G", "L_adv", "L_era", "L_perb", "L_total"})`` (unweighted floats).
    """
    total = (cfg.lambda_att * l_att + cfg.lambda_rec * l_rec + cfg.lambda_G * l_G + cfg.lambda_adv * l_adv
             + cfg.lambda_era * l_era + cfg.lambda_perb * l_perb)
    return _terms(total, att_G=l_att, rec=l_rec, G=l_G, adv=l_adv, era=l_era, perb=l_perb)


def stage3_loss(*, l_era: Tensor, cfg: Stage3Config | None = None) -> tuple[Tensor, dict[str, float]]:
    """Eq. 16: ``L3 = L_era`` (R alone; no λ). ``cfg`` is accepted for symmetry and unused."""
    del cfg
    return _terms(l_era, era=l_era)

