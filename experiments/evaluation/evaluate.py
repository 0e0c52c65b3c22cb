"""Evaluation of any protection scheme on the test (or val) split: every FR model, every transform, per-sample rows.

:func:`evaluate_protection` scores a
:class:`~erasablemask.experiments.evaluation.protection.Protection` with the
:class:`~erasablemask.experiments.evaluation.validator.ProtectionValidator`
(clean, attribute-only and protected@t rows for every surrogate and
black-box model; :mod:`~erasablemask.experiments.evaluation.records` for the
columns), derives the summary metrics from those rows
(:func:`~erasablemask.experiments.evaluation.metrics.summary_metrics`: ASR
at τ1 = threshold at ``evaluation.asr_far``, ESR (Eq. 18, literal) at τ2 =
threshold at ``evaluation.esr_far``, identity restoration at FAR 0.01,
baselines, target-pair ceilings, group means), and adds image quality and
attribute accuracy from the same protected images (each face is protected
once). :func:`evaluate_checkpoint` does this for ErasableMask loaded from a
checkpoint directory or a run folder.

Summary keys: ``asr/<model>`` (no transform) and ``asr@<t>/<model>``,
``esr...``, ``esr_unrestored...`` (Eq. 18 on the protected face without R),
``idr...``, ``cos...``, ``asr_clean/<model>``, ``asr_attr_only/<model>``,
``idr_clean/<model>``, ``target_pair_cos/<model>``,
``target_pair_verified/<model>``, ``<key>/surrogates_mean``,
``<key>/black_box_mean``, ``quality/...`` and ``attr/...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.devices import compile_forward, resolve_device
from erasablemask.experiments.evaluation.metrics import summary_metrics
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.quality import ImageQuality
from erasablemask.experiments.evaluation.records import RECORDS_SCHEMA_VERSION
from erasablemask.experiments.evaluation.targets import ImpersonationTargets, build_targets
from erasablemask.experiments.evaluation.validator import ProtectedBatch, ProtectionValidator

__all__ = ["EvaluationReport", "evaluate_protection", "evaluate_checkpoint"]


@dataclass(eq=False)
class EvaluationReport:
    """What one evaluation found: summary metrics, per-sample records and what was evaluated.

    Attributes:
        metrics: summary metrics (module docstring for the keys), derived from ``records``.
        records: per-sample rows (schema in :mod:`~erasablemask.experiments.evaluation.records`);
            write them with :func:`~erasablemask.experiments.evaluation.records.write_records`.
        n_images: source images protected.
        targets: the target identities' names.
        checkpoint: the checkpoint evaluated (None for schemes without one).
        stage: its curriculum stage (None likewise).
        method: the protection's name.
        run: the run id or name in the records.
    """

    metrics: dict[str, float]
    records: pd.DataFrame = field(repr=False)
    n_images: int
    targets: list[str]
    checkpoint: str | None
    stage: int | None
    method: str
    run: str

    def summary_json(self) -> dict[str, Any]:
        """The JSON summary (evaluation.json): metrics, n_images, targets, checkpoint, stage, method, run and the
        records schema version."""
        return {"metrics": dict(self.metrics), "n_images": self.n_images, "targets": list(self.targets),
                "checkpoint": self.checkpoint, "stage": self.stage, "method": self.method, "run": self.run,
                "records_schema_version": RECORDS_SCHEMA_VERSION}


def evaluate_protection(
    cfg: ErasableMaskConfig,
    protection: Protection,
    *,
    run: str,
    stage: int | None,
    split: Literal["val", "test"] = "test",
    transforms: Sequence[str] | None = None,
    max_images: int | None = None,
    attribute_accuracy: bool = True,
    discriminator: nn.Module | None = None,
    checkpoint: Path | None = None,
    models: Mapping[str, nn.Module] | None = None,
    targets: ImpersonationTargets | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_batch: Callable[[ProtectedBatch], None] | None = None,
) -> EvaluationReport:
    """Full evaluation of ``protection`` (module docstring).

    Args:
        cfg: the run's config (data, targets, FR models and their roles, thresholds' FARs).
        protection: the scheme to evaluate (networks on ``device``).
        run: run id or name, for the records.
        stage: the scheme's curriculum stage, for the records (None: no stages).
        split: source images to protect.
        transforms: evaluation transforms (default ``evaluation.transforms``; ``none`` is always scored).
        max_images: cap on source images (default ``evaluation.max_images``; 0 = all).
        attribute_accuracy: also measure the attribute accuracy of the scheme's edits with a
            separately trained classifier (schemes that edit attributes; and with
            ``discriminator``'s D_att head, for reference).
        discriminator: AttGAN D for the D_att judge (optional).
        checkpoint: what was loaded, for the report.
        models: FR models by name, to share them between evaluations (default: built from
            ``attack.surrogates`` and ``attack.black_box``; roles come from those lists).
        targets: the impersonation targets (default: :func:`build_targets`).
        device: where to compute (default ``compute.device``).
        progress: show progress of FR-model and classifier preparation.
        on_batch: also called with each batch's :class:`ProtectedBatch` (e.g. to keep faces for commercial
            services: ``platform/commercial_scoring.py``).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        UncalibratedError: an FR model has no threshold at a needed FAR (before any work).
    """
    device = resolve_device(cfg.compute.device) if device is None else torch.device(device)
    if models is None:
        from erasablemask.experiments.fr_tools.zoo import build_fr_models

        models = build_fr_models(cfg, list(cfg.attack.surrogates) + list(cfg.attack.black_box), device,
                                 progress=progress)
        if cfg.compute.compile:  # inference only: no second-order gradients through them here
            models = {name: compile_forward(m) for name, m in models.items()}
    targets = build_targets(cfg) if targets is None else targets
    transforms = list(cfg.evaluation.transforms if transforms is None else transforms)
    if "none" not in transforms:
        transforms.insert(0, "none")
    max_images = cfg.evaluation.max_images if max_images is None else max_images
    validator = ProtectionValidator(cfg, dict(models), targets, device, split=split, max_images=max_images)
    observers = [ImageQuality()]
    if attribute_accuracy:
        from erasablemask.experiments.evaluation.attribute_classifier import EditAccuracy

        observers.append(EditAccuracy(cfg, discriminator=discriminator, progress=progress))

    def observe(out: ProtectedBatch) -> None:
        for obs in observers:
            obs.add(out)
        if on_batch is not None:
            on_batch(out)

    records = validator.score(protection, transforms, run=run, stage=stage, on_batch=observe)
    records = observers[0].fill_records(records)  # per-image quality columns (Table VI)
    metrics = summary_metrics(records)
    for obs in observers:
        metrics.update(obs.result())
    return EvaluationReport(metrics=metrics, records=records, n_images=validator.n_images, targets=targets.names,
                            checkpoint=None if checkpoint is None else str(checkpoint), stage=stage,
                            method=protection.name, run=run)


def evaluate_checkpoint(
    cfg: ErasableMaskConfig,
    checkpoint: Path,
    *,
    run: str | None = None,
    split: Literal["val", "test"] = "test",
    transforms: Sequence[str] | None = None,
    max_images: int | None = None,
    attribute_accuracy: bool = True,
    progress: bool = True,
) -> EvaluationReport:
    """Full evaluation of ErasableMask from a stage-2/3 checkpoint directory or a run folder.

    Args:
        cfg: the run's config (must fit the checkpoint).
        checkpoint: a complete stage-2 or stage-3 checkpoint directory, or a run folder
            (its last complete stage-3, else stage-2, checkpoint:
            :class:`~erasablemask.experiments.evaluation.erasablemask_protection.ErasableMaskProtection`).
        run: run id or name for the records (default: the run folder's name, else the checkpoint's).
        split, transforms, max_images, attribute_accuracy, progress: as :func:`evaluate_protection`
            (attribute accuracy is also judged by the checkpoint's D_att).

    Returns:
        The :class:`EvaluationReport` (``checkpoint``: the checkpoint directory evaluated).
    """
    from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection

    device = resolve_device(cfg.compute.device)
    protection = ErasableMaskProtection.from_checkpoint(cfg, Path(checkpoint), device)
    if run is None:
        run = (protection.run_dir or protection.checkpoint).name
    return evaluate_protection(cfg, protection, run=run, stage=protection.stage, split=split, transforms=transforms,
                               max_images=max_images, attribute_accuracy=attribute_accuracy,
                               discriminator=protection.discriminator, checkpoint=protection.checkpoint,
                               device=device, progress=progress)
