"""The frozen FR models of an experiment, by registry name, built from the config alone.

Mini-world models (``mini_*``) are trained (if not cached) and calibrated on
*this config's* world (:func:`~erasablemask.experiments.data.splits.zoo_world`),
then built from that world's weights file with the thresholds of that
world's held-out set; other models are built from their default weights
(published thresholds, or the one calibration made here for those weights).
Nothing depends on earlier calls in the process, so a Ray actor or a Tune
trial given the same config gets the same models and thresholds as the driver.
"""

from __future__ import annotations

import torch

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import freeze
from erasablemask.experiments.data.splits import zoo_world
from erasablemask.experiments.fr_tools.mini_world import heldout_calibration_set
from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo
from erasablemask.models.fr.registry import FaceRecognizer, build

__all__ = ["build_fr_models"]


def build_fr_models(cfg: ErasableMaskConfig, names: list[str], device: torch.device | str = "cpu",
                    *, progress: bool = True) -> dict[str, FaceRecognizer]:
    """Frozen FR models by registry name; ``mini_*`` ones trained/calibrated on this config's world first.

    Args:
        cfg: the experiment's config (its ``data`` section defines the mini-world).
        names: registry names, e.g. ``attack.surrogates + attack.black_box``.
        device: where the models go.
        progress: show training progress bars.

    Returns:
        ``{name: model}`` in eval mode with ``requires_grad`` off, in the order of ``names``.

    Raises:
        ValueError: ``mini_*`` models with real data (``data.kind != "miniworld"``).
    """
    minis = [n for n in names if n.startswith("mini_")]
    paths, calibration = {}, None
    if minis:
        if cfg.data.kind != "miniworld":
            raise ValueError(f"FR models {minis} are mini-world models; with data.kind={cfg.data.kind!r} "
                             f"use real FR models in attack.surrogates / attack.black_box")
        world = zoo_world(cfg)
        paths = ensure_mini_zoo(minis, world, progress=progress)
        calibration = heldout_calibration_set(world)
    models = {}
    for n in names:
        model = build(n, weights=paths[n], calibration=calibration) if n in paths else build(n)
        models[n] = freeze(model).to(device)
    return models
