"""Evaluation fanned out over Ray actors: one FR model per actor, per-sample records gathered on the driver.

:func:`~erasablemask.experiments.evaluation.evaluate.evaluate_protection`
scores every FR model one after another in one process. Here each FR model
(every surrogate and black-box model) lives in its own :class:`EvalActor`,
built once with the same ``build_fr_models`` the driver would use
(:func:`~erasablemask.platform.fr_actors.build_one_fr_model`), and each actor
scores the protection against its one model with the same
:class:`~erasablemask.experiments.evaluation.validator.ProtectionValidator`
(every transform); the driver concatenates the records. A model's records
depend only on that model, the protection's output and the seeded transforms
(the validator scores the models independently), so the gathered records are
the sequential evaluation's rows, in another order: :func:`canonical_order`
sorts both the same way. Metrics follow from the records
(:func:`~erasablemask.experiments.evaluation.metrics.summary_metrics`).

The protection travels as a picklable factory (e.g.
``functools.partial(ErasableMaskProtection.from_checkpoint, cfg, ckpt)``
or a competitor's constructor), built once per actor and scoring call, so a
deterministic protection gives every actor the driver's protected faces. One
pool serves many protections (ErasableMask and every competitor) without
reloading the FR models. Actors take ``compute.remote_fr``'s CPUs, GPUs and
custom resources.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import pandas as pd
import torch

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.evaluation.targets import ImpersonationTargets, build_targets
from erasablemask.platform.fr_actors import build_one_fr_model

__all__ = ["EvalActor", "FREvalPool", "canonical_order"]

ProtectionFactory = Callable[[], Protection]  # picklable; built inside each actor


def canonical_order(records: pd.DataFrame) -> pd.DataFrame:
    """Records sorted by (model, kind, transform, sample), index reset: one order for sequential and fanned out."""
    keys = [k for k in ("model", "kind", "transform", "sample") if k in records.columns]
    return records.sort_values(keys, kind="stable").reset_index(drop=True)


class EvalActor:
    """One FR model, loaded once, scoring protections against it (a Ray actor via :class:`FREvalPool`).

    Args:
        cfg_json: the config as JSON (``cfg.model_dump(mode="json")``).
        name: the FR model's registry name.
        num_threads: torch CPU threads in the actor.
    """

    def __init__(self, cfg_json: dict[str, Any], name: str, num_threads: int = 1) -> None:
        torch.set_num_threads(max(1, int(num_threads)))
        self.cfg = ErasableMaskConfig.model_validate(cfg_json)
        self.name = name
        self.model = build_one_fr_model(cfg_json, name)

    def score(self, protection_factory: ProtectionFactory, targets: ImpersonationTargets, transforms: list[str],
              run: str, stage: int | None, split: str, max_images: int) -> pd.DataFrame:
        """This model's per-sample records for the protection (the validator's columns)."""
        from erasablemask.experiments.evaluation.quality import ImageQuality
        from erasablemask.experiments.evaluation.validator import ProtectionValidator

        # "auto" inside an actor: the GPU Ray assigned to it (CUDA_VISIBLE_DEVICES), else its CPUs.
        validator = ProtectionValidator(self.cfg, {self.name: self.model}, targets, resolve_device("auto"),
                                        split=split, max_images=max_images)
        # The per-image quality columns, as evaluate_protection fills them (each actor its own model's rows;
        # the metrics do not depend on the FR model, so every actor computes the same values).
        quality = ImageQuality()
        records = validator.score(protection_factory(), transforms, run=run, stage=stage, on_batch=quality.add)
        return quality.fill_records(records)


class FREvalPool:
    """One :class:`EvalActor` per FR model on the Ray this process is connected to; ``shutdown()`` when done.

    Args:
        cfg: the run's config; ``compute.remote_fr`` gives each actor's CPUs, GPUs and custom resources.
        names: FR models (default ``attack.surrogates + attack.black_box``, the evaluation's models).

    Raises:
        RayNotRunning: this process is not connected to Ray.
    """

    def __init__(self, cfg: ErasableMaskConfig, names: Sequence[str] | None = None) -> None:
        import ray

        from erasablemask.platform.ray_session import require_ray

        require_ray()
        self.cfg = cfg
        self.names = list(dict.fromkeys(names if names is not None
                                        else [*cfg.attack.surrogates, *cfg.attack.black_box]))
        settings = cfg.compute.remote_fr
        actor = ray.remote(EvalActor).options(num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor,
                                              resources=dict(settings.resources) or None)
        cfg_json = cfg.model_dump(mode="json")
        self.handles = {n: actor.remote(cfg_json, n, max(1, int(settings.cpus_per_actor))) for n in self.names}

    def records(
        self,
        protection_factory: ProtectionFactory,
        *,
        run: str,
        stage: int | None,
        split: Literal["val", "test"] = "test",
        transforms: Sequence[str] | None = None,
        max_images: int | None = None,
        targets: ImpersonationTargets | None = None,
    ) -> pd.DataFrame:
        """Every model's per-sample records for one protection, scored in parallel and concatenated.

        Args: as :func:`~erasablemask.experiments.evaluation.evaluate.evaluate_protection` (``none`` is always
        scored; defaults from ``evaluation.*``; targets default to :func:`build_targets`, built once here).

        Returns:
            The records in :func:`canonical_order`.
        """
        import ray

        targets = build_targets(self.cfg) if targets is None else targets
        transforms = list(self.cfg.evaluation.transforms if transforms is None else transforms)
        if "none" not in transforms:
            transforms.insert(0, "none")
        max_images = self.cfg.evaluation.max_images if max_images is None else max_images
        futures = [h.score.remote(protection_factory, targets, transforms, run, stage, split, max_images)
                   for h in self.handles.values()]
        return canonical_order(pd.concat(ray.get(futures), ignore_index=True))

    def shutdown(self) -> None:
        """Kill the actors."""
        import ray

        for handle in self.handles.values():
            ray.kill(handle, no_restart=True)
        self.handles = {}

    def __enter__(self) -> FREvalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
