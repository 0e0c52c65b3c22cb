"""Scoring any :class:`Protection` on fixed batches with fixed FR models and targets, into per-sample records.

For each source image ``x`` of the fixed batches (:mod:`.batches`) the
validator scores, with every FR model:

- ``clean``: ``x`` itself, the clean baseline of Table II (embedded once);
- ``attr_only``: the scheme's attribute edit ``attribute_only(x, att_b)``
  (ErasableMask: ``x_cov^{att_b}``), the "Attributes Modified" baseline;
- ``destroyed``: a heavy blur of ``protect(x, x_target)`` (metrics.destroy), the
  control that any literal ESR passes;
- ``protected@t``: ``t(protect(x, x_target))`` for each evaluation transform
  ``t`` (Table V; ``none`` is the identity), with ``erase(t(...))`` where the
  scheme can erase.

Similarities are to the target's *evaluation* photo (the attack sees its
training photo, passed to ``protect`` as ``x_target``) and to another photo
of the source identity. The rows follow
:mod:`~erasablemask.experiments.evaluation.records`; the rates and the
summary keys come from :mod:`~erasablemask.experiments.evaluation.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.evaluation.batches import EvalBatch, evaluation_batches
from erasablemask.experiments.evaluation.metrics import IDR_FAR, cosine, destroy, success_flags, summary_metrics
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.records import FAR_COLUMNS, records_frame
from erasablemask.experiments.evaluation.targets import ImpersonationTargets, target_index_for
from erasablemask.experiments.seeding import derive_seed
from erasablemask.models.eval_transforms import build_eval_transform

__all__ = ["ProtectedBatch", "ProtectionValidator"]


@dataclass
class ProtectedBatch:
    """One evaluation batch through a protection, as per-batch observers (quality, attribute accuracy) see it.

    Images are ``(N, 3, H, W)`` in [-1, 1] on the validator's device.
    """

    batch: EvalBatch
    x: Tensor  # the clean sources
    protected: Tensor  # protect(x, x_target)
    attribute_only: Tensor | None  # the scheme's attribute edit (None: it does not edit)
    restored: Tensor | None  # erase(protected), untransformed (None: cannot erase, or 'none' not scored)


def _thresholds(fr: nn.Module, cfg: ErasableMaskConfig) -> dict[str, float | None]:
    """The records' threshold columns of one model; τ1, τ2 and the FAR-0.01 one are required."""
    e = cfg.evaluation
    out: dict[str, float | None] = {"tau1": fr.threshold(e.asr_far), "tau2": fr.threshold(e.esr_far)}
    for far, column in FAR_COLUMNS.items():
        try:
            out[column] = fr.threshold(far)
        except LookupError:  # UncalibratedError: optional, except identity restoration's
            if far == IDR_FAR:
                raise
            out[column] = None
    return out


class ProtectionValidator:
    """Scores any :class:`Protection` on fixed batches with fixed FR models and targets.

    Args:
        cfg: the config (thresholds' FARs, model roles, seed).
        models: name -> frozen FR model (surrogates and black-box).
        targets: the run's impersonation targets (training photos go to ``protect``,
            evaluation photos are scored against).
        device: where to compute (the protection's networks must live there).
        split: "val" (per-epoch validation) or "test" (evaluation).
        max_images: cap on the number of source images (0 = all).

    Raises:
        UncalibratedError: a model has no threshold at a needed FAR (before any work).
    """

    def __init__(self, cfg: ErasableMaskConfig, models: dict[str, nn.Module], targets: ImpersonationTargets,
                 device: torch.device | str, *, split: Literal["val", "test"] = "val", max_images: int = 0) -> None:
        self.cfg, self.models, self.targets, self.device, self.split = cfg, models, targets, torch.device(device), split
        self.thresholds = {m: _thresholds(fr, cfg) for m, fr in models.items()}
        self.roles = {m: "surrogate" if m in cfg.attack.surrogates else "black_box" for m in models}
        self.batches = evaluation_batches(cfg, split, max_images)
        self._target_train = targets.train_images.to(self.device)
        with torch.no_grad():
            self.target_emb = {m: fr(targets.eval_images.to(self.device)) for m, fr in models.items()}
            # The ceiling the protocol sets: does the target's training photo itself verify against its
            # evaluation photo? (One cosine per target.)
            self.target_pair = {m: cosine(fr(self._target_train), self.target_emb[m]) for m, fr in models.items()}
            self.source_emb = [None if b.x_other is None else {m: fr(b.x_other.to(self.device))
                                                               for m, fr in models.items()} for b in self.batches]
            self.clean_emb = [{m: fr(b.x.to(self.device)) for m, fr in models.items()} for b in self.batches]

    @property
    def n_images(self) -> int:
        return sum(b.x.shape[0] for b in self.batches)

    def _target_rows(self, b: EvalBatch) -> Tensor | None:
        return target_index_for(b.index, len(self.targets))

    def _target(self, m: str, which: Tensor | None) -> Tensor:
        emb = self.target_emb[m]
        return emb if which is None else emb[which.to(emb.device)]

    @torch.no_grad()
    def score(self, protection: Protection, transforms: Sequence[str] = ("none",), *, run: str = "",
              stage: int | None = None, on_batch: Callable[[ProtectedBatch], None] | None = None) -> pd.DataFrame:
        """Per-sample records of ``protection`` (clean, attribute-only and protected@t rows for every model).

        Args:
            protection: the scheme to score (its networks on this validator's device).
            transforms: evaluation transforms applied to the protected faces.
            run: the records' ``run`` column.
            stage: the records' ``stage`` column (None: the scheme has no stages).
            on_batch: called once per batch with its :class:`ProtectedBatch`.

        Returns:
            Records (schema in :mod:`~erasablemask.experiments.evaluation.records`).
        """
        options = self.cfg.evaluation.transform_options  # Table V's parameters from the config
        fns = {t: build_eval_transform(t, **options.get(t, {})) for t in transforms}
        blocks: list[dict[str, np.ndarray]] = []
        for k, b in enumerate(self.batches):
            x, att_a, att_b = b.x.to(self.device), b.att_a.to(self.device), b.att_b.to(self.device)
            which = self._target_rows(b)
            x_target = self._target_train[torch.zeros_like(b.index) if which is None else which].to(self.device)
            x_adv = protection.protect(x, x_target, att_a=att_a, att_b=att_b)
            x_attr = protection.attribute_only(x, att_a=att_a, att_b=att_b)
            x_destroyed = destroy(x_adv)  # ESR's destroyed control (metrics.py)
            for m, fr in self.models.items():
                blocks.append(self._block(k, "clean", m, "none", self.clean_emb[k][m]))
                if x_attr is not None:
                    blocks.append(self._block(k, "attr_only", m, "none", fr(x_attr)))
                blocks.append(self._block(k, "destroyed", m, "none", fr(x_destroyed)))
            restored_none = None
            for t, fn in fns.items():
                x_t = fn(x_adv, seed=derive_seed(self.cfg.seed, "eval_transform", t, k))
                x_rec = protection.erase(x_t, att_a=att_a, att_b=att_b) if protection.can_erase else None
                if t == "none":
                    restored_none = x_rec
                for m, fr in self.models.items():
                    blocks.append(self._block(k, "protected", m, t, fr(x_t), None if x_rec is None else fr(x_rec)))
            if on_batch is not None:
                on_batch(ProtectedBatch(batch=b, x=x, protected=x_adv, attribute_only=x_attr, restored=restored_none))
        return self._frame(blocks, run=run, method=protection.name, stage=stage)

    def _block(self, k: int, kind: str, m: str, t: str, emb: Tensor, emb_rec: Tensor | None = None
               ) -> dict[str, np.ndarray]:
        """The rows of batch ``k``, model ``m``: an image's embeddings ``emb`` (and its restored one's)."""
        b, src = self.batches[k], self.source_emb[k]
        n = b.x.shape[0]
        which = self._target_rows(b)
        target = self._target(m, which)

        def col(values: Tensor | None) -> np.ndarray:
            return np.full(n, np.nan, dtype=np.float32) if values is None else values.float().cpu().numpy()

        target_k = np.zeros(n, dtype=np.int64) if which is None else which.numpy()
        ident = b.identity.numpy()
        return {
            "kind": np.full(n, kind, dtype=object), "model": np.full(n, m, dtype=object),
            "role": np.full(n, self.roles[m], dtype=object), "transform": np.full(n, t, dtype=object),
            "sample": b.index.numpy().astype(np.int64),
            "source_identity": np.where(ident >= 0, ident, None).astype(object),
            "target": np.asarray(self.targets.names, dtype=object)[target_k],
            "cos_target": col(cosine(emb, target)),
            "cos_source": col(None if src is None else cosine(emb, src[m])),
            "cos_restored_target": col(None if emb_rec is None else cosine(emb_rec, target)),
            "cos_restored_source": col(None if emb_rec is None or src is None else cosine(emb_rec, src[m])),
            "cos_target_pair": self.target_pair[m].float().cpu().numpy()[target_k],
            **{c: np.full(n, np.nan if v is None else v, dtype=np.float32) for c, v in self.thresholds[m].items()},
        }

    def _frame(self, blocks: list[dict[str, np.ndarray]], *, run: str, method: str, stage: int | None) -> pd.DataFrame:
        columns: dict[str, object] = {c: np.concatenate([blk[c] for blk in blocks]) for c in blocks[0]}
        n = len(columns["kind"])
        columns.update(run=np.full(n, run, dtype=object), method=np.full(n, method, dtype=object),
                       stage=np.full(n, stage, dtype=object), seed=np.full(n, self.cfg.seed, dtype=np.int64),
                       split=np.full(n, self.split, dtype=object))
        columns.update(success_flags(pd.DataFrame({c: columns[c] for c in (
            "cos_target", "cos_restored_target", "cos_restored_source", "tau1", "tau2", FAR_COLUMNS[IDR_FAR])})))
        return records_frame(columns)

    def validate(self, protection: Protection, prefix: str = "val/") -> dict[str, float]:
        """Per-epoch validation: no transform; the summary metrics of the records, keys with ``prefix``."""
        return summary_metrics(self.score(protection), prefix=prefix)
