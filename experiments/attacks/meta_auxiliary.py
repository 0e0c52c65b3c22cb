"""The meta-auxiliary attack (Algorithm 1, Eq. 9-12), its first-order variant and the plain ensemble.

One function, :func:`adversarial_loss`, computes ``L_adv`` for a batch; the
caller runs ``backward()`` and ONE optimiser step on ``E_adv``.

For each surrogate ``p`` as primary (Algorithm 1, lines 5-11):

1. ``L_pri_p = 1 - cos(FR_p(x_target), FR_p(x_adv))`` (Eq. 9, batch mean);
2. ``θ'_E = θ_E - meta_lr · ∇_θE L_pri_p`` (Eq. 10, first line). With
   ``method="meta_auxiliary"`` the inner gradient keeps its graph
   (``create_graph=True``), so ``dL_adv/dθ_E`` contains the second-order
   term ``-meta_lr · H_pri · ∇L_aux``; ``"first_order"`` detaches it (FOMAML);
3. ``x'_adv = generate(θ'_E)`` through ``torch.func.functional_call`` (no module copy);
4. ``L_aux_p = Σ_{q≠p} w_q(t) (1 - cos(FR_q(x_target), FR_q(x'_adv))) / (K-1)`` (Eq. 10).

Then ``L_adv = max((1/2K) Σ_p (L_pri_p + L_aux_p), ε)`` (Eq. 12, taken
literally: the mean over the 2K terms, K primary and K auxiliary).
``"ensemble"`` (the "w/o meta-auxiliary" ablation, Table VII) is
``max((1/K) Σ_i L_pri_i, ε)``, unweighted: the adaptive weights belong to the
meta-auxiliary attack (Eq. 10).

Target embeddings ``FR_i(x_target)`` are computed once per target by
:class:`TargetEmbeddings` and reused every step.

The meta step, visible (:class:`AdvLossResult`): per primary ``p`` the
relative size of the meta-train update ``‖θ'_E − θ_E‖ / ‖θ_E‖`` (over all of
E_adv's parameters) and the change it makes to the auxiliary loss,
``L_aux_p(θ') − L_aux_p(θ)``, where ``L_aux_p(θ)`` is Eq. 10's weighted sum
on ``x_adv`` itself (no extra forward). When both are ~0 the meta-auxiliary
attack is a weighted ensemble in that run; stage 2 logs them
(``meta/step_rel``, ``meta/aux_change``, per surrogate and their mean).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.models.image_checks import check_image_range

__all__ = ["METHODS", "AdvLossResult", "TargetEmbeddings", "adversarial_loss", "make_generate"]

Method = Literal["meta_auxiliary", "first_order", "ensemble"]
METHODS: tuple[str, ...] = ("meta_auxiliary", "first_order", "ensemble")
Generate = Callable[[dict[str, Tensor] | None], Tensor]


@dataclass
class AdvLossResult:
    """What :func:`adversarial_loss` returns.

    Attributes:
        loss: ``L_adv`` (Eq. 12), 0-dim, with a graph to ``params`` (zero gradient when clamped at ε).
        per_surrogate_pri: ``L_pri_i`` (Eq. 9) on ``x_adv`` per surrogate: what
            :meth:`AdaptiveWeights.record_batch` records for Eq. 11.
        per_surrogate_aux: ``L_aux_p`` (Eq. 10) with ``p`` as primary; empty for ``"ensemble"``.
        mean: the value before the ε clamp.
        clamped: whether ``mean < ε`` (then the attack does not push this step).
        meta_step_rel: ``‖θ'_E − θ_E‖ / ‖θ_E‖`` per primary; empty for ``"ensemble"``.
        aux_change: ``L_aux_p(θ') − L_aux_p(θ)`` per primary (negative: the meta-train step
            helped the auxiliary models); empty for ``"ensemble"``.
    """

    loss: Tensor
    per_surrogate_pri: dict[str, float]
    per_surrogate_aux: dict[str, float] = field(default_factory=dict)
    mean: float = 0.0
    clamped: bool = False
    meta_step_rel: dict[str, float] = field(default_factory=dict)
    aux_change: dict[str, float] = field(default_factory=dict)

    def meta_logs(self) -> dict[str, float]:
        """``meta/step_rel/<p>``, ``meta/aux_change/<p>`` and their means ``meta/step_rel``, ``meta/aux_change``."""
        out: dict[str, float] = {}
        for key, values in (("meta/step_rel", self.meta_step_rel), ("meta/aux_change", self.aux_change)):
            if values:
                out.update({f"{key}/{p}": v for p, v in values.items()})
                out[key] = sum(values.values()) / len(values)
        return out


class TargetEmbeddings:
    """``FR_i(x_target)`` for every surrogate, computed once (no gradient) and cached.

    Args:
        surrogates: name -> FR model (a ``FaceRecognizer``: ``[-1, 1]`` images in,
            ``(T, D)`` embeddings out).
        x_target: ``(T, 3, H, W)`` in [-1, 1]: one training image per target identity.
    """

    def __init__(self, surrogates: Mapping[str, nn.Module], x_target: Tensor) -> None:
        check_image_range(x_target, "x_target")
        if not surrogates:
            raise ValueError("`surrogates` is empty; pass at least one FR model")
        with torch.no_grad():
            self._emb = {name: fr(x_target).detach() for name, fr in surrogates.items()}
        self.n_targets = x_target.shape[0]

    @property
    def names(self) -> list[str]:
        return list(self._emb)

    def get(self, name: str) -> Tensor:
        """``(T, D)`` embeddings of the targets by surrogate ``name``."""
        if name not in self._emb:
            raise KeyError(f"no target embeddings for surrogate '{name}'; built for {self.names} — "
                           "rebuild TargetEmbeddings with the same surrogates")
        return self._emb[name]

    def for_batch(self, name: str, n: int, target_index: Tensor | None = None) -> Tensor:
        """``(n, D)`` target embedding per sample: the single target broadcast, or rows ``target_index`` ((n,) long)."""
        emb = self.get(name)
        if target_index is None:
            if self.n_targets != 1:
                raise ValueError(f"{self.n_targets} targets are cached: pass target_index ((N,) long, "
                                 "the target row of each sample)")
            return emb.expand(n, -1)
        if target_index.shape != (n,):
            raise ValueError(f"`target_index` must have shape ({n},); got {tuple(target_index.shape)}")
        return emb[target_index.to(emb.device)]

    def to(self, device: torch.device | str) -> TargetEmbeddings:
        """Move the cached embeddings (in place) and return self."""
        self._emb = {k: v.to(device) for k, v in self._emb.items()}
        return self


def _validate(params: Mapping[str, Tensor], surrogates: Mapping[str, nn.Module], targets: TargetEmbeddings,
              weights: Mapping[str, float], method: str, meta_lr: float, epsilon: float) -> list[str]:
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS} (attack.method); got {method!r}")
    names = list(surrogates)
    if not names:
        raise ValueError("`surrogates` is empty; list at least one FR model (attack.surrogates)")
    if method != "ensemble":
        if len(names) < 2:
            raise ValueError(f"method {method!r} needs ≥ 2 surrogates (one primary, ≥ 1 auxiliary); got {names}")
        missing = [n for n in names if n not in weights]
        if missing:
            raise ValueError(f"`weights` has no entry for surrogate(s) {missing}; pass AdaptiveWeights.weights()")
        if meta_lr < 0:
            raise ValueError(f"`meta_lr` must be ≥ 0 (attack.meta_lr); got {meta_lr}")
        if not params:
            raise ValueError("`params` is empty; pass dict(E_adv.named_parameters())")
        frozen = [k for k, p in params.items() if not p.requires_grad]
        if frozen:
            raise ValueError(f"`params` {frozen[:5]} do not require grad; pass E_adv's trainable parameters")
    if epsilon < 0:
        raise ValueError(f"`epsilon` must be ≥ 0 (attack.epsilon); got {epsilon}")
    absent = [n for n in names if n not in targets.names]
    if absent:
        raise ValueError(f"`targets` has no embeddings for {absent}; build TargetEmbeddings with these surrogates")
    trainable = [n for n, m in surrogates.items() if any(p.requires_grad for p in m.parameters())]
    if trainable:
        raise ValueError(f"surrogate(s) {trainable} have parameters with requires_grad=True; "
                         "freeze them with fr.requires_grad_(False) (they would receive gradients)")
    return names


def adversarial_loss(
    generate: Generate,
    params: Mapping[str, Tensor],
    surrogates: Mapping[str, nn.Module],
    targets: TargetEmbeddings,
    weights: Mapping[str, float],
    *,
    method: Method = "meta_auxiliary",
    meta_lr: float = 1e-2,
    epsilon: float = 0.2,
    target_index: Tensor | None = None,
    x_adv: Tensor | None = None,
) -> AdvLossResult:
    """``L_adv`` of one batch (Algorithm 1 lines 4-13, Eq. 9-12); see the module docstring.

    Args:
        generate: ``generate(params_or_None)`` returns the (noised) protected
            batch ``x_adv`` ((N, 3, H, W) in [-1, 1]) made with E_adv parameters
            ``params_or_None`` (None: the module's own). It must be
            deterministic within the step (same noise layer and noise sample on
            every call), or the meta-test sees another input than the meta-train.
        params: E_adv's parameters, the very tensors the module uses
            (``dict(E_adv.named_parameters())``): the inner gradient is taken w.r.t. them.
        surrogates: name -> frozen FR model (K of them), in eval mode.
        targets: cached ``FR_i(x_target)`` (:class:`TargetEmbeddings`).
        weights: ``w_i(t)`` per surrogate (Eq. 11, ``AdaptiveWeights.weights()``); unused by ``"ensemble"``.
        method: ``"meta_auxiliary"`` (second order), ``"first_order"`` or ``"ensemble"``.
        meta_lr: Algorithm 1's inner step size ``lr`` (``attack.meta_lr``).
        epsilon: ε of Eq. 12 (``attack.epsilon``).
        target_index: ``(N,)`` long: which cached target each sample impersonates (None: the single target).
        x_adv: ``generate(None)`` if the caller already has it (saves one G forward); it
            must carry its graph to ``params``.

    Returns:
        :class:`AdvLossResult`.
    """
    names = _validate(params, surrogates, targets, weights, method, meta_lr, epsilon)
    k = len(names)
    if x_adv is None:
        x_adv = generate(None)
    n = x_adv.shape[0]
    emb_t = {name: targets.for_batch(name, n, target_index) for name in names}

    def fr_loss(name: str, image: Tensor) -> Tensor:  # Eq. 9 / the summand of Eq. 10, batch mean
        emb = surrogates[name](image)
        return 1.0 - F.cosine_similarity(emb, emb_t[name].to(emb.dtype), dim=1).mean()

    pri = {name: fr_loss(name, x_adv) for name in names}
    aux: dict[str, Tensor] = {}
    step_norm: dict[str, Tensor] = {}  # ‖θ' − θ‖ per primary
    theta_norm = None
    if method == "ensemble":
        mean = torch.stack(list(pri.values())).mean()
    else:
        keys = list(params)
        tensors = [params[key] for key in keys]
        second_order = method == "meta_auxiliary"
        for p in names:
            grads = torch.autograd.grad(pri[p], tensors, create_graph=second_order, retain_graph=True,
                                        allow_unused=True)
            if all(g is None for g in grads):
                raise ValueError("L_pri does not depend on `params`: pass the parameters that generate(None) "
                                 "uses (dict(E_adv.named_parameters())) and a generate that uses E_adv")
            theta_prime = {  # Eq. 10: θ'_E = θ_E − lr ∇θ_E L_pri
                key: t if g is None else t - meta_lr * (g if second_order else g.detach())
                for key, t, g in zip(keys, tensors, grads)
            }
            with torch.no_grad():
                used = [g for g in grads if g is not None]
                step_norm[p] = meta_lr * torch.sqrt(sum(g.detach().double().square().sum() for g in used))
            x_prime = generate(theta_prime)
            aux[p] = sum(weights[q] * fr_loss(q, x_prime) for q in names if q != p) / (k - 1)  # Eq. 10
        mean = (torch.stack(list(pri.values())).sum() + torch.stack(list(aux.values())).sum()) / (2 * k)  # Eq. 12
        with torch.no_grad():
            theta_norm = torch.sqrt(sum(t.detach().double().square().sum() for t in tensors))
    loss = torch.clamp(mean, min=epsilon)  # Eq. 12: max(·, ε); zero gradient below ε
    # One device-to-host copy for every logged value (one sync per step on a GPU).
    extra = [*step_norm.values(), theta_norm] if theta_norm is not None else []
    values = torch.stack([mean, *pri.values(), *aux.values()]).detach().double().tolist()
    extra = torch.stack(extra).tolist() if extra else []
    mean_value, values = values[0], values[1:]
    pri_values = dict(zip(names, values[:k]))
    aux_values = dict(zip(list(aux), values[k:]))
    meta_step_rel, aux_change = {}, {}
    if extra:
        norm = max(extra[-1], 1e-30)
        for p, size in zip(step_norm, extra[:-1]):
            meta_step_rel[p] = size / norm
            aux_at_theta = sum(weights[q] * pri_values[q] for q in names if q != p) / (k - 1)  # Eq. 10 at θ
            aux_change[p] = aux_values[p] - aux_at_theta
    return AdvLossResult(
        loss=loss,
        per_surrogate_pri=pri_values,
        per_surrogate_aux=aux_values,
        mean=mean_value,
        clamped=mean_value < epsilon,
        meta_step_rel=meta_step_rel,
        aux_change=aux_change,
    )


def make_generate(
    model: nn.Module,
    x: Tensor,
    a_b: Tensor,
    *,
    noise: Callable[..., Tensor] | None = None,
    noise_seed: int | None = None,
    isolate_bn_stats: bool = True,
) -> Generate:
    """A ``generate`` for :func:`adversarial_loss` from an ``ErasableMaskGenerator``.

    Args:
        model: an ``ErasableMaskGenerator`` (``protect(x, a_b, e_adv_params=...)``).
        x: clean faces ``x_cov^{att_a}``, (N, 3, H, W) in [-1, 1].
        a_b: target attribute code (N, n_attrs).
        noise: optional noise layer ``noise(x_adv, generator=...)`` (the ``TrainingNoisePool``).
        noise_seed: seed of a fresh CPU ``torch.Generator`` handed to ``noise`` on every call, so every
            call of one step draws the same layer and the same noise. Required with ``noise``.
        isolate_bn_stats: with θ' (not None), run E_adv on copies of its BatchNorm buffers so the
            meta-test forwards do not move the running statistics (only ``generate(None)`` does).

    Returns:
        ``generate(params_or_None) -> x_adv`` (noised if ``noise`` is given).
    """
    if noise is not None and noise_seed is None:
        raise ValueError("`noise_seed` is required with `noise`: every call of one step must draw the same noise")
    encoder = model.perturbation_encoder

    def generate(params: dict[str, Tensor] | None) -> Tensor:
        if params is not None and isolate_bn_stats:
            params = {**{k: b.clone() for k, b in encoder.named_buffers()}, **params}
        x_adv = model.protect(x, a_b, e_adv_params=params).x_adv
        if noise is not None:
            x_adv = noise(x_adv, generator=torch.Generator().manual_seed(int(noise_seed)))
        return x_adv

    return generate
