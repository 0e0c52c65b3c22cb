"""The Protection interface: range and shape checks at the boundary, erasion only where supported, ErasableMask behind it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _curriculum_tiny import tiny_config

from erasablemask.experiments.curriculum.build import build_generator, build_protection, build_restorer
from erasablemask.experiments.data.attribute_codes import code_attributes
from erasablemask.experiments.evaluation.erasablemask_protection import (
    ErasableMaskProtection,
    resolve_protection_checkpoint,
)
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.models.erasablemask import restorer_code


class _Shift(Protection):
    """Adds a constant: in range for small shifts, out of range for large ones."""

    name = "shift"

    def __init__(self, delta: float) -> None:
        self.delta = delta

    def _protect(self, x, x_target, *, att_a, att_b):
        return x + self.delta


def _faces(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8


def test_protect_checks_inputs_and_the_schemes_output_naming_the_scheme():
    x = _faces()
    out = _Shift(0.1).protect(x, x)
    assert torch.allclose(out, x + 0.1) and not out.requires_grad
    with pytest.raises(ValueError, match=r"protection 'shift': x.*\[-1, 1\].*got values in \[0, 255\]"):
        _Shift(0.1).protect(torch.full((1, 3, 8, 8), 255.0).index_fill(3, torch.tensor([0]), 0.0), x[:1])
    with pytest.raises(ValueError, match=r"protection 'shift': output of protect"):
        _Shift(0.5).protect(x, x)
    with pytest.raises(ValueError, match="x_target has 1 faces for 2 sources"):
        _Shift(0.1).protect(x, x[:1])
    with pytest.raises(ValueError, match=r"att_b must hold 0/1 labels.*\[-1, 1\]"):
        _Shift(0.1).protect(x, x, att_b=torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))


def test_a_scheme_without_erasion_or_edits_says_so():
    shift = _Shift(0.1)
    assert shift.attribute_only(_faces()) is None and not shift.can_erase
    with pytest.raises(NotImplementedError, match="protection 'shift' cannot erase"):
        shift.erase(_faces())


def test_gradient_attacks_enable_gradients_themselves_under_a_callers_no_grad():
    class _Sign(Protection):
        name = "sign"

        def _protect(self, x, x_target, *, att_a, att_b):
            with torch.enable_grad():
                z = x.clone().requires_grad_(True)
                ((z - x_target) ** 2).sum().backward()
                return (x - 0.05 * z.grad.sign()).clamp(-1, 1)

    x, t = _faces(), _faces().flip(0)
    with torch.no_grad():
        out = _Sign().protect(x, t)
    assert (out - t).abs().sum() < (x - t).abs().sum()  # moved towards the target


def test_erasablemask_protection_is_the_generator_and_restorer_and_keeps_their_modes():
    cfg = tiny_config("protection.restorer_attribute_input=source")
    torch.manual_seed(0)
    G = build_generator(cfg)
    protector, restorer = build_protection(cfg, G), build_restorer(cfg, G)
    protection = ErasableMaskProtection(cfg, protector, restorer)
    x = _faces(2, cfg.data.image_size)
    att_a = torch.tensor([[0.0] * 13, [1.0] * 13])
    att_b = 1 - att_a
    x_adv = protection.protect(x, x, att_a=att_a, att_b=att_b)
    assert protector.training and restorer.training  # live networks get their mode back
    protector.eval()
    restorer.eval()
    with torch.no_grad():
        ref = protector.protect(x, code_attributes(att_b, cfg))
        rec = restorer(x_adv, restorer_code("source", code_attributes(att_a, cfg), None))
    assert torch.equal(x_adv, ref.x_adv)
    assert torch.equal(protection.attribute_only(x, att_a=att_a, att_b=att_b), ref.x_cov_b)
    assert torch.equal(protection.erase(x_adv, att_a=att_a, att_b=att_b), rec)
    with pytest.raises(ValueError, match="erase needs att_a"):
        protection.erase(x_adv)


def test_a_folder_without_a_protection_checkpoint_is_refused_with_the_fix(tmp_path: Path):
    (tmp_path / "stage1" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no complete stage-3 or stage-2 checkpoint.*--stage 2-3"):
        resolve_protection_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_protection_checkpoint(tmp_path / "nowhere")
