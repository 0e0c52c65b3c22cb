"""Stage kinds beyond ErasableMask's 1-3: the generator-based competitors, trained by the same loop.

A competitor's generator (AdvFaces, GMAA) is trained by
:func:`erasablemask.experiments.curriculum.loop.run_stage` like a curriculum
stage, so it gets the runners' machinery for free: a Ray Train worker group
with DDP, per-epoch checkpoints and exact resume, fault injection and an
MLflow child run (``platform/competitor_training.py``). Its stage *kind* is the
competitor's name (a string, where ErasableMask's stages are 1, 2, 3); its
hyper-parameters travel as ``params`` (a JSON-able dict of the attack's fields),
and its epochs are ``params["epochs"]`` (the attack's default otherwise).

Each kind names its trainer lazily (``module:Class``) so that importing the
curriculum does not import the competitors.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "COMPETITOR_STAGES",
    "is_competitor_stage",
    "competitor_trainer_class",
    "competitor_epochs",
    "check_stage_kind",
]

COMPETITOR_STAGES: dict[str, str] = {
    "advfaces": "erasablemask.experiments.attacks.advfaces:AdvFacesTrainer",
    "gmaa": "erasablemask.experiments.attacks.gmaa:GMAATrainer",
}


def is_competitor_stage(stage: Any) -> bool:
    """Whether ``stage`` is a competitor's stage kind (a registered name)."""
    return isinstance(stage, str) and stage in COMPETITOR_STAGES


def check_stage_kind(stage: Any) -> int | str:
    """``stage`` as the loop takes it: 1, 2, 3 or a competitor's name (digits in a string become an int).

    Raises:
        ValueError: anything else (the message lists the kinds).
    """
    if isinstance(stage, str) and stage.isdigit():
        stage = int(stage)
    if stage in (1, 2, 3) and not isinstance(stage, bool):
        return int(stage)
    if is_competitor_stage(stage):
        return stage
    raise ValueError(
        f"stage must be 1, 2, 3 or a competitor's generator ({', '.join(sorted(COMPETITOR_STAGES))}); got {stage!r}"
    )


def competitor_trainer_class(stage: str) -> type:
    """The trainer class of a competitor stage kind."""
    module, _, name = COMPETITOR_STAGES[stage].partition(":")
    return getattr(importlib.import_module(module), name)


def competitor_epochs(stage: str, params: dict[str, Any] | None) -> int:
    """Epochs of a competitor stage: ``params["epochs"]``, else the attack's default."""
    return int(competitor_trainer_class(stage).attack_class.resolve_params(params or {})["epochs"])
