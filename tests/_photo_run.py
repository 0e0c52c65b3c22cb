"""A tiny ErasableMask run folder for the photo commands: the tiny test config, a complete stage-3 checkpoint.

The networks are the tiny config's, freshly built with a fixed seed and written in the trainer's own checkpoint
format (``save_checkpoint``, ``config.yaml``), so ``--run`` loads them exactly as it loads a trained run; training
would only change their weights, which the photo mechanics under test do not depend on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from _curriculum_tiny import tiny_config

from erasablemask.experiments.config.loading import dump_config
from erasablemask.experiments.curriculum.build import (
    build_discriminator,
    build_generator,
    build_protection,
    build_restorer,
)
from erasablemask.experiments.curriculum.checkpoint import save_checkpoint
from erasablemask.models.atomic_files import write_text_atomic


def make_photo_run(run: Path, *extra: str) -> Path:
    """Write ``run/config.yaml`` and ``run/stage3/final`` (complete); returns ``run``."""
    cfg = tiny_config(*extra)
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    protector, restorer = build_protection(cfg, G), build_restorer(cfg, G)
    run.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / "config.yaml", dump_config(cfg))
    save_checkpoint(
        run / "stage3" / "final",
        cfg=cfg,
        stage=3,
        epoch=1,
        global_step=1,
        complete=True,
        modules={"generator": G, "discriminator": D, "protector": protector, "restorer": restorer},
        state={},
    )
    return run
