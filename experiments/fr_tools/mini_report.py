"""How good and how diverse the mini-world FR zoo is.

Two measurements, both on the held-out identities of a mini-world (which no
mini model was trained on):

* :func:`zoo_quality`: per model, parameters, training time (from the
  weights file's metadata) and the calibration record on the world's
  held-out set (TAR at each FAR, AUC).
* :func:`impersonation_transfer`: an L∞ PGD impersonation attack on one
  model (white-box), scored on every model (transfer). Each source image of
  held-out identity ``i`` is pushed towards one image of identity ``j ≠ i``
  and judged against a *different* image of ``j`` (the AMT-GAN convention
  the main evaluation uses) at each model's threshold at ``far``. If the
  models were copies of each other, transfer would equal white-box success.

Mini-world numbers, never the paper's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import safe_open
from torch import Tensor

from erasablemask.experiments.data.miniworld import MiniWorld
from erasablemask.experiments.fr_tools.mini_world import MiniZooWorld
from erasablemask.experiments.fr_tools.mini_zoo import mini_calibration
from erasablemask.models.fr.registry import FaceRecognizer
from erasablemask.models.image_checks import check_image_range

__all__ = [
    "zoo_quality",
    "pgd_impersonate",
    "impersonation_pairs",
    "impersonation_transfer",
    "format_transfer",
    "report_json",
]


def zoo_quality(paths: Mapping[str, Path], world: MiniZooWorld) -> list[dict]:
    """One row per model: ``name, params, train_seconds, train_cpu_seconds, auc, tar@<far>...``.

    Args:
        paths: ``{name: weights path}`` as returned by ``ensure_mini_zoo(names, world)``.
        world: the world they were trained on (its calibration identities' calibration is reported).
    """
    rows = []
    for name, path in paths.items():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        cal = mini_calibration(name, world) or {"tar": {}}
        row = {
            "name": name,
            "params": int(meta.get("params", 0)),
            "train_seconds": float(meta.get("seconds", "nan")),
            "train_cpu_seconds": float(meta.get("cpu_seconds", "nan")),
            "auc": cal.get("auc"),
        }
        row.update({f"tar@{far:g}": tar for far, tar in sorted(cal["tar"].items(), reverse=True)})
        rows.append(row)
    return rows


def pgd_impersonate(
    model: FaceRecognizer | Sequence[FaceRecognizer],
    sources: Tensor,
    targets: Tensor,
    *,
    eps: float = 8 / 255 * 2,
    steps: int = 10,
    step_size: float | None = None,
    dodge: bool = False,
) -> Tensor:
    """L∞ PGD towards ``targets``' embeddings: minimise ``1 − cos(f(x_adv), f(target))`` (``dodge``: maximise it).

    Args:
        model: the white-box FR model, or several (an ensemble: their losses are averaged).
        sources: ``(N, 3, H, W)`` in [-1, 1], images to perturb.
        targets: ``(N, 3, H, W)`` in [-1, 1], one target image per source.
        eps: L∞ budget in [-1, 1] units (default 16/255, i.e. 8/255 of the [0, 1] range).
        steps: signed-gradient steps.
        step_size: per step (default ``2.5 * eps / steps``).
        dodge: move away from ``targets`` instead (dodging a genuine pair: ``targets`` = the same person).

    Returns:
        ``(N, 3, H, W)`` adversarial images in [-1, 1] with ``|x_adv - x| <= eps``.
    """
    check_image_range(sources, "sources")
    check_image_range(targets, "targets")
    if sources.shape != targets.shape:
        raise ValueError(f"sources {tuple(sources.shape)} and targets {tuple(targets.shape)} must have the same shape")
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    models = [model] if isinstance(model, FaceRecognizer) else list(model)
    with torch.no_grad():
        goals = [m.eval()(targets) for m in models]
    x_adv = sources.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = sum((1 - (m(x_adv) * g).sum(1)).sum() for m, g in zip(models, goals)) / len(models)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + step_size * grad.sign() if dodge else x_adv - step_size * grad.sign()
            x_adv = (sources + (x_adv - sources).clamp(-eps, eps)).clamp(-1, 1)
    return x_adv.detach()


def _impersonation_gradient(models: Sequence[FaceRecognizer], sources: Tensor, targets: Tensor) -> Tensor:
    """``∇_x`` of :func:`pgd_impersonate`'s loss (mean over ``models`` of ``1 − cos``) at the clean ``sources``."""
    with torch.no_grad():
        goals = [m.eval()(targets) for m in models]
    x = sources.clone().requires_grad_(True)
    loss = sum((1 - (m(x) * g).sum(1)).sum() for m, g in zip(models, goals)) / len(models)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.flatten(1)


def gradient_alignment(
    surrogates: Sequence[FaceRecognizer], models: Mapping[str, FaceRecognizer], sources: Tensor, targets: Tensor
) -> dict[str, dict[str, Tensor]]:
    """How far the surrogates' impersonation gradient points where each model's does: what limits transfer.

    Per pair, at the clean source: the cosine between the input gradient of the surrogate ensemble's loss and
    that of the model's own loss, and the share of pixels where their signs agree (what a signed-gradient step
    uses; 0.5 = unrelated), among the pixels the ensemble's gradient reaches (not those outside the face crop).
    A black-box model the ensemble's steps do not move is one whose gradient is orthogonal to the ensemble's.

    Returns:
        ``{model: {"cosine": (N,), "sign_agreement": (N,)}}``.
    """
    check_image_range(sources, "sources")
    g_ens = _impersonation_gradient(list(surrogates), sources, targets)
    seen = g_ens != 0  # pixels outside every model's face crop have no gradient: not counted as agreeing
    out = {}
    for name, model in models.items():
        g = _impersonation_gradient([model], sources, targets)
        out[name] = {
            "cosine": torch.nn.functional.cosine_similarity(g, g_ens, dim=1),
            "sign_agreement": ((g.sign() == g_ens.sign()) & seen).sum(1) / seen.sum(1).clamp_min(1),
        }
    return out


def impersonation_pairs(
    world: MiniWorld, identities: Sequence[int], n: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` (source, attack target, evaluation target) image triples among ``identities``.

    The source is of identity ``i``; both targets are different images of
    one identity ``j ≠ i``. Drawn with ``seed``.

    Returns:
        Three ``(n, 3, H, W)`` tensors in [-1, 1].
    """
    ids = list(identities)
    if len(ids) < 2 or world.images_per_identity < 2:
        raise ValueError("impersonation needs >= 2 identities with >= 2 images each")
    gen = torch.Generator().manual_seed(seed)
    per = world.images_per_identity
    src, tgt, ev = [], [], []
    for _ in range(n):
        i, j = (ids[int(k)] for k in torch.randperm(len(ids), generator=gen)[:2])
        a, b = torch.randperm(per, generator=gen)[:2].tolist()
        src.append(i * per + int(torch.randint(per, (1,), generator=gen)))
        tgt.append(j * per + a)
        ev.append(j * per + b)
    return world.images(src), world.images(tgt), world.images(ev)


@torch.no_grad()
def _success(model: FaceRecognizer, x: Tensor, target: Tensor, threshold: float) -> float:
    return float(((model(x) * model(target)).sum(1) > threshold).float().mean())


def impersonation_transfer(
    models: Mapping[str, FaceRecognizer],
    attacked: Sequence[str],
    sources: Tensor,
    attack_targets: Tensor,
    eval_targets: Tensor,
    *,
    far: float = 0.01,
    eps: float = 8 / 255 * 2,
    steps: int = 10,
) -> dict[str, dict[str, float]]:
    """Impersonation success of PGD on each ``attacked`` model, scored on every model.

    Args:
        models: ``{name: model}``; each needs a threshold at ``far``.
        attacked: names of the white-box models to attack (one at a time).
        sources, attack_targets, eval_targets: from :func:`impersonation_pairs`.
        far: the operating point of the success decision.
        eps, steps: PGD budget and steps (see :func:`pgd_impersonate`).

    Returns:
        ``{attacked: {scored: success rate}}`` plus a ``"clean"`` row (the
        unperturbed sources); the diagonal is white-box success.
    """
    thresholds = {name: m.threshold(far) for name, m in models.items()}
    out = {"clean": {n: _success(m, sources, eval_targets, thresholds[n]) for n, m in models.items()}}
    for a in attacked:
        x_adv = pgd_impersonate(models[a], sources, attack_targets, eps=eps, steps=steps)
        out[a] = {n: _success(m, x_adv, eval_targets, thresholds[n]) for n, m in models.items()}
    return out


def format_transfer(matrix: Mapping[str, Mapping[str, float]]) -> str:
    """Plain-text table of :func:`impersonation_transfer` (rows attacked, columns scored)."""
    cols = list(next(iter(matrix.values())))
    width = max(len(c) for c in [*cols, *matrix]) + 2
    lines = ["attacked \\ scored".ljust(width) + "".join(c.rjust(width) for c in cols)]
    for row, vals in matrix.items():
        lines.append(row.ljust(width) + "".join(f"{vals[c]:.2f}".rjust(width) for c in cols))
    return "\n".join(lines)


def report_json(quality: list[dict], transfer: Mapping[str, Mapping[str, float]]) -> str:
    """Both measurements as one JSON document."""
    return json.dumps({"quality": quality, "transfer": transfer}, indent=2)
