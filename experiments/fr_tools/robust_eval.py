"""Verification accuracy of an FR model, clean and under white-box PGD, with 95 % intervals.

The measurement ``erasablemask fr robustify`` reports before and after
adversarial fine-tuning (the paper's Table IV compares protections against
robust FR models; these numbers say how robust those models are):

* **clean accuracy**: share of verification pairs decided correctly at the
  model's threshold at ``far`` (genuine accepted, impostor rejected), on a
  balanced pair set (every genuine pair and as many impostor pairs, drawn
  with a seed), as LFW's protocol balances them;
* **accuracy under PGD**: on ``n_attack`` impostor and ``n_attack`` genuine
  pairs, the first image is attacked white-box with L∞ PGD
  (:func:`~erasablemask.experiments.fr_tools.mini_report.pgd_impersonate`):
  impostor pairs to impersonate (accepted = wrong), genuine pairs to dodge
  (rejected = wrong); with the impersonation and dodging success rates.

Intervals: the identity bootstrap of the evaluation code
(:func:`~erasablemask.experiments.evaluation.metrics.identity_bootstrap_interval`),
clustering pairs by the identity of the attacked image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from erasablemask.experiments.evaluation.metrics import identity_bootstrap_interval
from erasablemask.experiments.fr_tools.mini_calibration import embed
from erasablemask.experiments.fr_tools.mini_report import pgd_impersonate
from erasablemask.models.fr.registry import FaceRecognizer

__all__ = ["balanced_pairs", "verification_robustness"]


def balanced_pairs(ids: Sequence, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every genuine pair of images with identity labels ``ids`` and as many impostor pairs (seeded draw).

    Returns:
        ``(a, b, same)``: image indices and 1 (genuine) / 0 (impostor), genuine pairs first.

    Raises:
        ValueError: no genuine or too few impostor pairs.
    """
    ids = np.asarray(ids)
    a, b = np.triu_indices(len(ids), k=1)
    same = ids[a] == ids[b]
    n_gen = int(same.sum())
    if n_gen == 0 or int((~same).sum()) < n_gen:
        raise ValueError(f"{len(ids)} images of {len(set(ids.tolist()))} identities give {n_gen} genuine and "
                         f"{int((~same).sum())} impostor pairs; need >= 1 genuine and as many impostor pairs")
    rng = np.random.default_rng(seed)
    imp = rng.choice(np.flatnonzero(~same), size=n_gen, replace=False)
    gen = np.flatnonzero(same)
    keep = np.concatenate([gen, np.sort(imp)])
    return a[keep], b[keep], same[keep].astype(np.int64)


def _rate(hits: np.ndarray, clusters: np.ndarray) -> tuple[float, float, float]:
    lo, hi = identity_bootstrap_interval(hits, clusters)
    return float(hits.mean()), lo, hi


def _attack(model: FaceRecognizer, a: Tensor, b: Tensor, *, eps: float, steps: int, dodge: bool,
            batch_size: int) -> Tensor:
    """Cosines ``cos(f(a_adv), f(b))`` after PGD on ``a`` towards (or, ``dodge``, away from) ``b``."""
    out = []
    for i in range(0, a.shape[0], batch_size):
        xa, xb = a[i : i + batch_size], b[i : i + batch_size]
        x_adv = pgd_impersonate(model, xa, xb, eps=eps, steps=steps, dodge=dodge)
        with torch.no_grad():
            out.append((model(x_adv) * model(xb)).sum(1))
    return torch.cat(out).cpu()


def verification_robustness(
    model: FaceRecognizer,
    images: Tensor,
    ids: Sequence,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    far: float = 0.01,
    eps_255: float = 8.0,
    steps: int = 10,
    n_attack: int = 100,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Clean verification accuracy and accuracy under PGD of ``model`` at its threshold at ``far``.

    Args:
        model: a built FR model with a threshold at ``far``.
        images: ``(N, 3, H, W)`` in [-1, 1], the images the pairs index.
        ids: ``(N,)`` identity of each image (the bootstrap's clusters).
        pairs: ``(a, b, same)`` index arrays, e.g. :func:`balanced_pairs`.
        far: operating point (threshold from the model's calibration).
        eps_255: L∞ budget in 1/255 of the [0, 1] range (8: the usual 8/255).
        steps: PGD steps (step size ``2.5 eps / steps``).
        n_attack: impostor pairs and genuine pairs attacked (each; fewer if the set has fewer).
        seed: which pairs are attacked.

    Returns:
        ``{"threshold", "clean_acc", "clean_acc_lo", "clean_acc_hi", "n_pairs", "adv_acc", "adv_acc_lo",
        "adv_acc_hi", "impersonation", "impersonation_lo", "impersonation_hi", "dodging", "dodging_lo",
        "dodging_hi", "n_attacked"}``, rates in [0, 1] with 95 % identity-bootstrap intervals.
    """
    thr = model.threshold(far)
    a, b, same = (np.asarray(p) for p in pairs)
    ids = np.asarray(ids)
    emb = embed(model, images)
    cos = (emb[torch.tensor(a)] * emb[torch.tensor(b)]).sum(1).cpu().numpy()
    correct = ((cos > thr) == same.astype(bool)).astype(np.float64)
    out = {"threshold": thr, "n_pairs": int(len(a))}
    out["clean_acc"], out["clean_acc_lo"], out["clean_acc_hi"] = _rate(correct, ids[a])
    rng = np.random.default_rng(seed)
    eps = 2 * eps_255 / 255  # [-1, 1] units
    hits, clusters = {}, {}
    for kind, flag in (("impersonation", 0), ("dodging", 1)):
        pool = np.flatnonzero(same == flag)
        pick = np.sort(rng.choice(pool, size=min(n_attack, len(pool)), replace=False))
        adv = _attack(model, images[a[pick]], images[b[pick]], eps=eps, steps=steps, dodge=bool(flag),
                      batch_size=batch_size).numpy()
        hits[kind] = ((adv > thr) if kind == "impersonation" else (adv <= thr)).astype(np.float64)
        clusters[kind] = ids[a[pick]]
        out[kind], out[f"{kind}_lo"], out[f"{kind}_hi"] = _rate(hits[kind], clusters[kind])
    wrong = np.concatenate([hits["impersonation"], hits["dodging"]])
    out["adv_acc"], out["adv_acc_lo"], out["adv_acc_hi"] = _rate(
        1.0 - wrong, np.concatenate([clusters["impersonation"], clusters["dodging"]]))
    out["n_attacked"] = int(len(wrong))
    return out
