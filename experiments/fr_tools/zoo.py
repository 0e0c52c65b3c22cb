"""The frozen FR models of an experiment, by registry name, built from the config alone.

Mini-world models (``mini_*``) are trained (if not cached) and calibrated on
*this config's* world (:func:`~erasablemask.experiments.data.splits.zoo_world`),
then built from that world's weights file with the thresholds of that
world's held-out set; robust entries of mini models (``erasablemask fr robustify``,
``<mini>_robust``) are fine-tuned (if not cached) and calibrated on the same world
(:func:`~erasablemask.experiments.fr_tools.robustify.ensure_robust_mini`); other models are built from their default weights
(published thresholds, or the one calibration made here for those weights).
Nothing depends on earlier calls in the process, so a Ray actor or a Tune
trial given the same config gets the same models and thresholds as the driver.

A runner may serve some models from elsewhere (the Ray runner: FR models in
Ray actors, ``platform/remote_fr.py``) by installing an :data:`FRProvider`
with :func:`fr_model_provider` around the stage; ``build_fr_models`` asks it
first and builds locally whatever it declines. Nothing here knows about Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import freeze
from erasablemask.experiments.data.splits import zoo_world
from erasablemask.experiments.devices import resolve_device
from erasablemask.experiments.fr_tools.mini_world import heldout_calibration_set
from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo
from erasablemask.experiments.fr_tools.robustify import ensure_robust_mini, resolve_base
from erasablemask.models.fr.mini_zoo import MINI_RECIPES
from erasablemask.models.fr.registry import FaceRecognizer, build

__all__ = ["FRProvider", "build_fr_models", "fr_model_provider"]

# (registry name, device) -> a drop-in for the FaceRecognizer of that name, or None to build it locally.
FRProvider = Callable[[str, torch.device | str], nn.Module | None]
_providers: list[FRProvider] = []


@contextmanager
def fr_model_provider(provider: FRProvider) -> Iterator[None]:
    """Within the block, :func:`build_fr_models` takes each model from ``provider`` when it offers one."""
    _providers.append(provider)
    try:
        yield
    finally:
        _providers.remove(provider)


def _provided(name: str, device: torch.device | str) -> nn.Module | None:
    for provider in reversed(_providers):
        model = provider(name, device)
        if model is not None:
            return model
    return None


def build_fr_models(cfg: ErasableMaskConfig, names: list[str], device: torch.device | str | None = None,
                    *, progress: bool = True) -> dict[str, FaceRecognizer]:
    """Frozen FR models by registry name; ``mini_*`` ones trained/calibrated on this config's world first.

    Args:
        cfg: the experiment's config (its ``data`` section defines the mini-world).
        names: registry names, e.g. ``attack.surrogates + attack.black_box``.
        device: where the models go (default ``compute.device``).
        progress: show training progress bars.

    Returns:
        ``{name: model}`` in eval mode with ``requires_grad`` off, in the order of ``names``.

    Raises:
        ValueError: ``mini_*`` models with real data (``data.kind != "miniworld"``).
    """
    device = resolve_device(cfg.compute.device) if device is None else torch.device(device)
    provided = {n: m for n in names if (m := _provided(n, device)) is not None}
    pending = [n for n in names if n not in provided]
    robust = [n for n in pending if n not in MINI_RECIPES and resolve_base(n) in MINI_RECIPES]  # `fr robustify`
    minis = [n for n in pending if n.startswith("mini_") and n not in robust]
    paths, calibration = {}, None
    if minis or robust:
        if cfg.data.kind != "miniworld":
            raise ValueError(f"FR models {minis + robust} are mini-world models; with data.kind={cfg.data.kind!r} "
                             f"use real FR models in attack.surrogates / attack.black_box")
        world = zoo_world(cfg)
        paths = ensure_mini_zoo(minis, world, progress=progress) if minis else {}
        paths.update({n: ensure_robust_mini(n, world, progress=progress) for n in robust})  # fine-tuned if missing
        calibration = heldout_calibration_set(world)
    models = {}
    for n in names:
        if n in provided:
            models[n] = freeze(provided[n])
            continue
        model = build(n, weights=paths[n], calibration=calibration) if n in paths else build(n)
        models[n] = freeze(model).to(device)
    return models
