"""Attribute labels as the generator sees them: the config's coding, and how training draws att_b."""

from __future__ import annotations

import torch

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.attributes import sample_target_attributes, to_generator_input

__all__ = ["code_attributes", "sample_att_b"]


def code_attributes(att01: torch.Tensor, cfg: ErasableMaskConfig) -> torch.Tensor:
    """0/1 labels -> generator input code (``data.attribute_coding``)."""
    return to_generator_input(att01, cfg.data.attribute_coding)


def sample_att_b(att_a01: torch.Tensor, cfg: ErasableMaskConfig, generator: torch.Generator) -> torch.Tensor:
    """Training ``att_b`` (``stage1.att_b_sampling``): "shuffle" permutes att_a across the batch
    (AttGAN-PyTorch); "flip" flips each attribute with probability ``stage1.att_b_flip_prob`` and
    resolves conflicts."""
    mode = "permute" if cfg.stage1.att_b_sampling == "shuffle" else "flip_random"
    return sample_target_attributes(att_a01, generator, mode=mode, p_flip=cfg.stage1.att_b_flip_prob)
