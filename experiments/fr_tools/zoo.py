"""The frozen FR models of an experiment, by registry name (mini-world models trained on demand)."""

from __future__ import annotations

import torch

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.curriculum.build import freeze
from erasablemask.experiments.data.splits import zoo_world
from erasablemask.models.fr.registry import FaceRecognizer

__all__ = ["build_fr_models"]


def build_fr_models(cfg: ErasableMaskConfig, names: list[str], device: torch.device | str = "cpu",
                    *, progress: bool = True) -> dict[str, FaceRecognizer]:
    """Frozen FR models by registry name; ``mini_*`` ones are trained/calibrated on this config's world first."""
    from erasablemask.models.fr import build

    minis = [n for n in names if n.startswith("mini_")]
    if minis:
        if cfg.data.kind != "miniworld":
            raise ValueError(f"FR models {minis} are mini-world models; with data.kind={cfg.data.kind!r} "
                             f"use real FR models in attack.surrogates / attack.black_box")
        from erasablemask.experiments.fr_tools.mini_zoo import ensure_mini_zoo

        ensure_mini_zoo(minis, zoo_world(cfg), progress=progress)
    return {n: freeze(build(n)).to(device) for n in names}
