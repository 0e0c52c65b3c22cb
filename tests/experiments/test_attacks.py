"""The competitors' registry and attacks: budgets that cannot drift, the targeted similarity rising, build errors.

Tiny white-box models (tests/_tiny_nets.py): random conv FR nets on 6x6
inputs, images 16x16, a 2-layer width-4 AttGAN, a 2-block attribute
classifier. Every registered name must have a tiny builder here (so a new
scheme gets these tests).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _tiny_nets import tiny_fr
from torch import nn

from erasablemask.experiments import attacks
from erasablemask.experiments.attacks.base import AdditiveBudget
from erasablemask.experiments.evaluation.attribute_classifier import AttributeClassifier
from erasablemask.models.attgan import AttGANGenerator

SIZE = 16
# Names whose instance needs training first: ErasableMask's run (tests/platform/test_compare.py) and the
# trained-generator competitors (tests/experiments/test_generator_competitors.py, and test_compare.py).
NEEDS_TRAINING = {"erasablemask", "advfaces", "gmaa"}


def _surrogates() -> list[nn.Module]:
    return [tiny_fr("tiny_a", nn.Tanh(), 0, {0.01: 0.5}), tiny_fr("tiny_b", nn.Softplus(), 1, {0.01: 0.5})]


def _generator() -> AttGANGenerator:
    torch.manual_seed(3)
    return AttGANGenerator(enc_dim=4, enc_layers=2, dec_dim=4, dec_layers=2, img_size=SIZE).eval()


def _ar_model() -> AttributeClassifier:
    torch.manual_seed(4)
    return AttributeClassifier(widths=(4, 8)).eval()


# name -> (hparams for a fast, strong tiny run, is additive)
TINY_BUILDERS = {
    "fgsm": (lambda: {"eps": 16 / 255}, True),
    "pgd": (lambda: {"eps": 8 / 255, "alpha": 2 / 255, "steps": 8}, True),
    "sibling": (
        lambda: {"ar_model": _ar_model(), "eps": 8 / 255, "outer_loops": 6, "inner_loops": 2, "alpha": 2 / 255},
        True,
    ),
    "semanticadv": (lambda: {"generator": _generator(), "steps": 20, "refine_steps": 2, "lr": 0.05}, False),
}
ADDITIVE_VARIANTS = {
    "fgsm": {"eps": 16 / 255},
    "fgsm+rs+di+ti": {
        "eps": 4 / 255,
        "random_start": True,
        "input_diversity": True,
        "di_prob": 1.0,
        "translation_invariance": True,
        "ti_kernel": 3,
    },
    "pgd": {"eps": 4 / 255, "alpha": 1 / 255, "steps": 5},
    "pgd+rs+mi+di+ti": {
        "eps": 4 / 255,
        "alpha": 1 / 255,
        "steps": 5,
        "random_start": True,
        "momentum": 1.0,
        "input_diversity": True,
        "di_prob": 1.0,
        "translation_invariance": True,
        "ti_kernel": 3,
    },
    "pgd:odd-eps": {"eps": 4.5 / 255, "alpha": 3 / 255, "steps": 3},
    "sibling": {"ar_model": None, "eps": 4 / 255, "outer_loops": 3, "inner_loops": 2, "alpha": 3 / 255},
}


def _faces(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """8-bit clean faces, target faces and 0/1 attributes (att_b flips attribute 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g).float() / 127.5 - 1
    x_t = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g).float() / 127.5 - 1
    att_a = torch.randint(0, 2, (n, 13), generator=g).float()
    att_b = att_a.clone()
    att_b[:, 0] = 1 - att_b[:, 0]
    return x, x_t, att_a, att_b


def _mean_cos(surrogates, x, x_t) -> float:
    with torch.no_grad():
        return float(torch.stack([F.cosine_similarity(fr(x), fr(x_t)) for fr in surrogates]).mean())


def test_every_registered_attack_has_a_tiny_builder():
    assert {"fgsm", "pgd", "sibling", "semanticadv", "erasablemask"} <= set(attacks.names())
    missing = set(attacks.names()) - set(TINY_BUILDERS) - NEEDS_TRAINING
    assert not missing, f"add a tiny builder for {sorted(missing)} to TINY_BUILDERS"


@pytest.mark.parametrize("variant", sorted(ADDITIVE_VARIANTS))
def test_additive_output_is_8bit_inside_the_ball_and_range(variant):
    name = variant.split("+")[0].split(":")[0]
    hp = dict(ADDITIVE_VARIANTS[variant])
    if name == "sibling":
        hp["ar_model"] = _ar_model()
    sur = _surrogates()
    attack = attacks.build(name, sur, **hp)
    x, x_t, _, _ = _faces()
    x[0, :, :2] = 1.0  # pixels at the range's ends: projection must keep them inside [-1, 1]
    x[1, :, :2] = -1.0
    out = attack(x, x_t)
    assert out.shape == x.shape and out.min() >= -1.0 and out.max() <= 1.0
    levels = (out.double() + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # multiples of one 8-bit level
    dist = ((out.double() - x.double()).abs() / 2).max()  # in [0, 1]-image units
    assert dist <= hp["eps"] + 1e-6
    assert dist >= hp["eps"] - 1 / 255 - 1e-6  # the attack uses its budget (not a no-op)
    # success is re-checked on what was returned
    check = attack.last_check
    for key, fr in zip(("tiny_a", "tiny_b"), sur, strict=True):
        expected = F.cosine_similarity(fr(out), fr(x_t))
        assert torch.allclose(check.cos[key], expected, atol=1e-6)
        assert torch.equal(check.success[key], expected > 0.5)


def test_quantisation_stays_inside_the_ball_where_rounding_would_step_out():
    x = torch.zeros(1, 3, 2, 2) / 127.5 - 1 + 100 / 127.5  # level 100
    budget = AdditiveBudget(4.5 / 255)  # 4.5 levels: nearest rounding of +4.6 levels would give 105
    x_adv = x + 4.6 / 127.5
    q = budget.quantise(budget.project(x_adv, x), x)
    assert torch.allclose((q + 1) * 127.5, torch.full_like(q, 104.0), atol=1e-4)
    # a clean pixel off the 8-bit grid: the level must still lie within eps
    x2 = torch.full((1, 3, 2, 2), (100.3 / 127.5) - 1)
    q2 = budget.quantise(x2 + 2 * 4.5 / 255, x2)
    assert float(((q2 - x2).abs() / 2).max()) <= 4.5 / 255 + 1e-9
    with pytest.raises(ValueError, match="eps must be in"):
        AdditiveBudget(4.0)


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_targeted_similarity_rises_on_the_white_box_models(name):
    hparams, _ = TINY_BUILDERS[name]
    sur = _surrogates()
    attack = attacks.build(name, sur, **hparams())
    x, x_t, att_a, _ = _faces(seed=1)
    att_b = 1 - att_a  # every attribute edited: SemanticAdv's interpolation range grows with the edit
    baseline = attack.attribute_only(x, att_a=att_a, att_b=att_b)  # SemanticAdv: the plain AttGAN edit
    baseline = x if baseline is None else baseline
    before = _mean_cos(sur, baseline, x_t)
    out = attack(x, x_t, att_a=att_a, att_b=att_b)
    after = _mean_cos(sur, out, x_t)
    # additive attacks move far within their budget; SemanticAdv only within α ∈ [0.6, 1] of the edit
    assert after > before + (0.05 if TINY_BUILDERS[name][1] else 0.02), (before, after)
    assert all(not p.requires_grad for m in sur for p in m.parameters())  # surrogates left frozen
    assert attack.name == name
    assert all(isinstance(v, (bool, int, float, str, type(None))) for v in attack.hparams().values())


def test_pgd_options_change_the_result_and_are_named():
    sur = _surrogates()
    x, x_t, _, _ = _faces(seed=2)
    plain = attacks.build("pgd", sur, eps=4 / 255, alpha=1 / 255, steps=4)
    hp = plain.hparams()
    assert hp["random_start"] is False and hp["momentum"] == 0.0
    assert hp["input_diversity"] is False and hp["translation_invariance"] is False
    assert math.isclose(hp["eps"], 4 / 255)
    a = plain(x, x_t)
    for option in (
        {"momentum": 1.0},
        {"translation_invariance": True, "ti_kernel": 3},
        {"input_diversity": True, "di_prob": 1.0},
        {"random_start": True},
    ):
        b = attacks.build("pgd", sur, eps=4 / 255, alpha=1 / 255, steps=4, **option)(x, x_t)
        assert not torch.equal(a, b), option
    again = attacks.build("pgd", sur, eps=4 / 255, alpha=1 / 255, steps=4, random_start=True, seed=5)
    assert torch.equal(again(x, x_t), again(x, x_t))  # seeded


def test_build_errors_name_the_input_and_the_allowed_values():
    with pytest.raises(LookupError, match=r"unknown attack 'nope'.*fgsm.*pgd"):
        attacks.build("nope", _surrogates())
    with pytest.raises(ValueError, match=r"no hyper-parameter epsilon; allowed: eps, .*random_start"):
        attacks.build("pgd", _surrogates(), epsilon=0.1)
    with pytest.raises(ValueError, match="eps must be in"):
        attacks.build("fgsm", _surrogates(), eps=4)
    with pytest.raises(ValueError, match="needs at least one surrogate"):
        attacks.build("pgd", [])
    with pytest.raises(ValueError, match="needs `generator`"):
        attacks.build("semanticadv", _surrogates())
    with pytest.raises(ValueError, match="needs `ar_model`"):
        attacks.build("sibling", _surrogates())
    with pytest.raises(ValueError, match="att_a and att_b"):
        x, x_t, _, _ = _faces()
        attacks.build("semanticadv", _surrogates(), generator=_generator(), steps=1, refine_steps=0)(x, x_t)
    with pytest.raises(ValueError, match="x_target has 2 faces for 4"):
        x, x_t, _, _ = _faces()
        attacks.build("fgsm", _surrogates())(x, x_t[:2])
