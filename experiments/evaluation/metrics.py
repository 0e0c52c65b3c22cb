"""Protection and erasion metrics (paper Eq. 17-18) and the checks the paper leaves out.

All FR embeddings here are L2-normalised (``FaceRecognizer`` returns them
so), so the cosine similarity is a dot product. Thresholds are cosine
thresholds read off a model's impostor distribution at a FAR
(``FaceRecognizer.threshold(far)``).

- ASR (Eq. 17): share of protected faces whose similarity to the target's
  (evaluation) image is *above* τ1, τ1 = threshold at FAR ``asr_far``
  (0.01; NOTES.md: "0.01 times the FAR" is the field's FAR-0.01 threshold).
- ESR (Eq. 18), literal: share of restored faces whose similarity to the
  target is *below* τ2, τ2 = threshold at FAR ``esr_far`` (0.1). It does not
  ask whether the restored face is the source person again.
- Identity-restoration rate (ours, NOTES.md): share of restored faces
  verified as the source identity against *another* image of that identity,
  at the FAR-0.01 threshold.
- Attribute accuracy of edited images: predicted 0/1 attributes against
  ``att_b``, over all attributes and over the edited (flipped) ones only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "cosine", "attack_success_rate", "erasion_success_rate", "identity_restoration_rate",
    "attribute_accuracy", "ScoreTally",
]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of L2-normalised embeddings.

    Args:
        a: (N, D) unit-norm embeddings.
        b: (N, D) or (1, D) unit-norm embeddings (broadcast).

    Returns:
        (N,) similarities in [-1, 1].
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"embeddings must be (N, D) and (N or 1, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a * b).sum(dim=1)


def attack_success_rate(emb_adv: Tensor, emb_target: Tensor, tau1: float) -> float:
    """Eq. 17: mean of 1[cos(FR(x_adv), FR(x_target)) > τ1]."""
    return float((cosine(emb_adv, emb_target) > tau1).float().mean())


def erasion_success_rate(emb_rec: Tensor, emb_target: Tensor, tau2: float) -> float:
    """Eq. 18 (literal): mean of 1[cos(FR(x_rec), FR(x_target)) < τ2]."""
    return float((cosine(emb_rec, emb_target) < tau2).float().mean())


def identity_restoration_rate(emb_rec: Tensor, emb_source_other: Tensor, tau: float) -> float:
    """Mean of 1[cos(FR(x_rec), FR(x_source')) > τ], x_source' another image of the source identity."""
    return float((cosine(emb_rec, emb_source_other) > tau).float().mean())


def attribute_accuracy(pred01: Tensor, att_b01: Tensor, att_a01: Tensor) -> dict[str, float]:
    """Accuracy of predicted attributes of edited images against the requested ``att_b``.

    Args:
        pred01: (N, n) predicted 0/1 attributes of the edited images.
        att_b01: (N, n) requested attributes.
        att_a01: (N, n) source attributes (to find the edited ones).

    Returns:
        ``{"all": accuracy over every attribute, "edited": accuracy over the
        attributes that differ between att_a and att_b (NaN if none),
        "n_edited": how many such entries}``.
    """
    if pred01.shape != att_b01.shape or att_a01.shape != att_b01.shape:
        raise ValueError(f"shapes differ: pred {tuple(pred01.shape)}, att_b {tuple(att_b01.shape)}, "
                         f"att_a {tuple(att_a01.shape)}")
    hit = (pred01.round() == att_b01.round()).float()
    edited = att_a01.round() != att_b01.round()
    n_edited = int(edited.sum())
    return {
        "all": float(hit.mean()),
        "edited": float(hit[edited].mean()) if n_edited else float("nan"),
        "n_edited": n_edited,
    }


@dataclass
class ScoreTally:
    """Cosine scores collected over batches, per (model, kind), turned into rates at the end.

    ``kind`` is a free label: ``"clean"``, ``"attr_only"``, ``"protected"``,
    ``"restored_target"``, ``"restored_source"`` ...
    """

    scores: dict[tuple[str, str], list[Tensor]] = field(default_factory=dict)

    def add(self, model: str, kind: str, sims: Tensor) -> None:
        self.scores.setdefault((model, kind), []).append(sims.detach().float().cpu())

    def get(self, model: str, kind: str) -> Tensor:
        parts = self.scores.get((model, kind))
        if not parts:
            raise KeyError(f"no scores for model '{model}', kind '{kind}' (have {sorted(self.scores)})")
        return torch.cat(parts)

    def rate_above(self, model: str, kind: str, tau: float) -> float:
        """Share of scores > τ (ASR, identity restoration)."""
        return float((self.get(model, kind) > tau).float().mean())

    def rate_below(self, model: str, kind: str, tau: float) -> float:
        """Share of scores < τ (ESR)."""
        return float((self.get(model, kind) < tau).float().mean())

    def mean(self, model: str, kind: str) -> float:
        return float(self.get(model, kind).mean())
