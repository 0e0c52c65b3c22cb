"""The paper config's stage 2 starts where the paper says: E_adv initialised as G_enc gives x_adv == x_cov_b."""

from __future__ import annotations

import pytest
import torch

from erasablemask.experiments.config.loading import load_config
from erasablemask.experiments.curriculum.build import build_generator, build_protection


def _stage1_like_generator(cfg):
    """A G whose BatchNorm running statistics are far from (0, 1), as after stage 1."""
    torch.manual_seed(0)
    g = build_generator(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            g(torch.rand(4, 3, 64, 64) * 1.6 - 0.8, torch.rand(4, len(cfg.model.attributes)) - 0.5)
    return g


@pytest.mark.parametrize("name", ["paper", "miniworld_demo"])
def test_start_of_stage2_protected_face_is_the_attribute_edit(name: str) -> None:
    # The paper's protection settings, on a small G (64 px, mini widths) so that the test stays fast.
    cfg = load_config(name, ["model=mini", "data.image_size=64"])
    assert cfg.protection.perturbation_bn == "frozen"
    g = _stage1_like_generator(cfg)
    protector = build_protection(cfg, g).train()  # stage 2 trains E_adv
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    a_b = (torch.rand(4, len(cfg.model.attributes)) > 0.5).float() - 0.5
    out = protector(x, a_b)
    assert torch.allclose(out.x_adv, out.x_cov_b, atol=1e-5)
    # With batch statistics in E_adv (what paper.yaml inherited before) the identity fails.
    batch = build_protection(
        cfg.model_copy(update={"protection": cfg.protection.model_copy(update={"perturbation_bn": "batch"})}),
        _stage1_like_generator(cfg),
    ).train()
    out_b = batch(x, a_b)
    assert (out_b.x_adv - out_b.x_cov_b).abs().max() > 1e-2
