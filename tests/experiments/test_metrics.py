"""ASR (Eq. 17), ESR (Eq. 18), identity restoration and attribute accuracy on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from erasablemask.experiments.evaluation.metrics import (
    ScoreTally,
    attack_success_rate,
    attribute_accuracy,
    cosine,
    erasion_success_rate,
    identity_restoration_rate,
)


def _unit(angles_deg: list[float]) -> torch.Tensor:
    a = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def test_cosine_of_unit_vectors_at_known_angles():
    target = _unit([0.0])
    sims = cosine(_unit([0.0, 60.0, 90.0, 180.0]), target)
    assert torch.allclose(sims, torch.tensor([1.0, 0.5, 0.0, -1.0]), atol=1e-6)


def test_cosine_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        cosine(torch.ones(3, 4), torch.ones(2, 4))


def test_asr_counts_strictly_above_tau1():
    # cosines 1.0, 0.5, 0.0, -1.0 against tau1 = 0.5: only the first is strictly above.
    emb = _unit([0.0, 60.0, 90.0, 180.0])
    assert attack_success_rate(emb, _unit([0.0]), 0.5 - 1e-6) == pytest.approx(0.5)
    assert attack_success_rate(emb, _unit([0.0]), 0.5 + 1e-6) == pytest.approx(0.25)


def test_esr_is_literal_eq18_below_tau2():
    emb = _unit([0.0, 60.0, 90.0, 180.0])
    # below 0.1: 0.0 and -1.0
    assert erasion_success_rate(emb, _unit([0.0]), 0.1) == pytest.approx(0.5)


def test_identity_restoration_pairs_rows():
    rec = _unit([0.0, 0.0, 0.0])
    source_other = _unit([10.0, 80.0, 170.0])  # cos 0.985, 0.174, -0.985
    assert identity_restoration_rate(rec, source_other, 0.5) == pytest.approx(1 / 3)


def test_attribute_accuracy_all_and_edited():
    att_a = torch.tensor([[0, 0, 1], [1, 0, 0]], dtype=torch.float32)
    att_b = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.float32)  # edited: (0,0) and (1,1)
    pred = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.float32)  # right on (0,0), wrong on (1,1)
    acc = attribute_accuracy(pred, att_b, att_a)
    assert acc["all"] == pytest.approx(4 / 6)
    assert acc["edited"] == pytest.approx(0.5)
    assert acc["n_edited"] == 2


def test_score_tally_accumulates_batches():
    t = ScoreTally()
    t.add("m", "protected", torch.tensor([0.9, 0.1]))
    t.add("m", "protected", torch.tensor([0.3]))
    assert t.rate_above("m", "protected", 0.2) == pytest.approx(2 / 3)
    assert t.rate_below("m", "protected", 0.2) == pytest.approx(1 / 3)
    assert t.mean("m", "protected") == pytest.approx((0.9 + 0.1 + 0.3) / 3)
    with pytest.raises(KeyError, match="no scores"):
        t.get("m", "restored")


def test_asr_matches_rate_from_random_embeddings():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(200, 16, generator=g), dim=1)
    b = F.normalize(torch.randn(1, 16, generator=g), dim=1)
    sims = (a @ b.T).squeeze(1)
    tau = float(sims.mean())  # almost surely equal to no score
    assert attack_success_rate(a, b, tau) == pytest.approx(float((sims > tau).float().mean()))
    assert attack_success_rate(a, b, tau) + erasion_success_rate(a, b, tau) == pytest.approx(1.0)
