"""``erasablemask`` in the competitors' registry: the trained ErasableMask of a run, through the same interface.

The factory loads :class:`~erasablemask.experiments.evaluation.erasablemask_protection.ErasableMaskProtection`
from a checkpoint directory or a run folder (which checkpoint: that module's
docstring). ErasableMask was trained against its run's surrogates and fixed
targets, so ``surrogates`` and ``x_target`` are accepted and not used; it
edits attributes (``att_a``/``att_b``) and can erase. It is a
:class:`~erasablemask.experiments.evaluation.protection.Protection` like every
:class:`~erasablemask.experiments.attacks.base.Attack`, callable as
``attack(x, x_target, att_a=..., att_b=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from erasablemask.experiments.attacks.registry import register
from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.evaluation.erasablemask_protection import ErasableMaskProtection

__all__ = ["ErasableMaskAttack", "build_erasablemask"]


@register("erasablemask")
def build_erasablemask(
    surrogates: Sequence[nn.Module], *, checkpoint: str | Path, cfg: ErasableMaskConfig,
    device: str | torch.device | None = None,
):
    """ErasableMask from ``checkpoint`` (a stage-2/3 checkpoint directory or a run folder) with ``cfg``.

    Args:
        surrogates: unused (the protector was trained against the run's ``attack.surrogates``).
        checkpoint: checkpoint directory or run folder.
        cfg: the run's config (it must match the checkpoint's).
        device: where the networks run (default ``compute.device``).

    Raises:
        FileNotFoundError: no complete stage-2/3 checkpoint at ``checkpoint``.
    """
    return ErasableMaskAttack.from_checkpoint(cfg, Path(checkpoint), device=device)


class ErasableMaskAttack(ErasableMaskProtection):
    """:class:`ErasableMaskProtection` callable as ``attack(x, x_target)``, with ``hparams()`` like an Attack."""

    def __call__(
        self, x: Tensor, x_target: Tensor, *, att_a: Tensor | None = None, att_b: Tensor | None = None
    ) -> Tensor:
        return self.protect(x, x_target, att_a=att_a, att_b=att_b)

    def hparams(self) -> dict[str, Any]:
        """What was loaded: the checkpoint directory and its stage (the networks' settings are the run's config)."""
        return {"checkpoint": str(self.checkpoint), "stage": self.stage}
