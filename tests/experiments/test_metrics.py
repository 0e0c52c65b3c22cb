"""ASR (Eq. 17), ESR (Eq. 18), identity restoration and the summary from hand-made records; attribute accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from erasablemask.experiments.evaluation.metrics import (
    attack_success_rate,
    attribute_accuracy,
    cosine,
    erasion_success_rate,
    identity_restoration_rate,
    success_flags,
    summary_metrics,
)
from erasablemask.experiments.evaluation.records import records_frame


def _unit(angles_deg: list[float]) -> torch.Tensor:
    a = torch.tensor(angles_deg) * math.pi / 180
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def _rows(cos_target, *, kind="protected", model="m", role="surrogate", transform="none", cos_source=None,
          cos_restored_target=None, cos_restored_source=None, target="t0", pair=0.5, tau1=0.5, tau2=0.1,
          thr01=0.5) -> dict[str, list]:
    n = len(cos_target)

    def col(v):
        return [None] * n if v is None else list(v)

    return {
        "run": ["r"] * n, "method": ["toy"] * n, "kind": [kind] * n, "stage": [None] * n, "seed": [0] * n,
        "split": ["test"] * n, "model": [model] * n, "role": [role] * n, "transform": [transform] * n,
        "sample": list(range(n)), "source_identity": [None] * n, "target": [target] * n,
        "cos_target": list(cos_target), "cos_source": col(cos_source),
        "cos_restored_target": col(cos_restored_target), "cos_restored_source": col(cos_restored_source),
        "cos_target_pair": [pair] * n, "thr_far_0p1": [tau2] * n, "thr_far_0p01": [thr01] * n,
        "thr_far_0p001": [None] * n, "tau1": [tau1] * n, "tau2": [tau2] * n,
        "attack_success": [False] * n, "erasion_success": [None] * n, "identity_restored": [None] * n,
    }


def _frame(*blocks: dict[str, list]):
    cols = {k: sum((b[k] for b in blocks), []) for k in blocks[0]}
    df = records_frame(cols)
    for name, flags in success_flags(df).items():
        df[name] = flags
    return df


def test_cosine_of_unit_vectors_at_known_angles():
    target = _unit([0.0])
    sims = cosine(_unit([0.0, 60.0, 90.0, 180.0]), target)
    assert torch.allclose(sims, torch.tensor([1.0, 0.5, 0.0, -1.0]), atol=1e-6)


def test_cosine_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        cosine(torch.ones(3, 4), torch.ones(2, 4))


def test_asr_counts_strictly_above_tau1():
    # cosines 1.0, 0.5, 0.0, -1.0 against tau1 = 0.5: only the first is strictly above; at 0.5 - 1e-6 two are.
    rows = _frame(_rows([1.0, 0.5, 0.0, -1.0], tau1=0.5))
    assert attack_success_rate(rows) == pytest.approx(0.25)
    assert attack_success_rate(_frame(_rows([1.0, 0.5, 0.0, -1.0], tau1=0.5 - 1e-6))) == pytest.approx(0.5)
    assert rows["attack_success"].tolist() == [True, False, False, False]


def test_esr_is_literal_eq18_strictly_below_tau2():
    rows = _frame(_rows([0.9] * 5, cos_restored_target=[0.3, 0.1, 0.05, -0.2, 0.0999], tau2=0.1))
    assert erasion_success_rate(rows) == pytest.approx(3 / 5)  # 0.05, -0.2, 0.0999; 0.1 itself is not below
    # Eq. 18 on the protected face itself: no cosine below 0.1.
    assert erasion_success_rate(rows, cos="cos_target") == 0.0
    assert rows["erasion_success"].tolist() == [False, False, True, True, True]


def test_identity_restoration_counts_above_the_far_001_threshold():
    rows = _frame(_rows([0.0] * 3, cos_restored_target=[0.0] * 3, cos_restored_source=[0.985, 0.174, -0.985],
                        thr01=0.5))
    assert identity_restoration_rate(rows) == pytest.approx(1 / 3)
    assert rows["identity_restored"].tolist() == [True, False, False]


def test_a_rate_at_another_far_uses_that_threshold_column():
    block = _rows([0.7, 0.8, 0.95], tau1=0.75)
    block["thr_far_0p001"] = [0.9] * 3
    rows = _frame(block)
    assert attack_success_rate(rows) == pytest.approx(2 / 3)
    assert attack_success_rate(rows, tau="thr_far_0p001") == pytest.approx(1 / 3)


def test_rates_refuse_rows_without_restored_faces_and_empty_selections():
    rows = _frame(_rows([0.9, 0.1]))  # a scheme that cannot erase: restored columns null
    assert rows["erasion_success"].isna().all()
    with pytest.raises(ValueError, match="2 of 2 rows have no 'cos_restored_target'"):
        erasion_success_rate(rows)
    with pytest.raises(ValueError, match="no rows"):
        attack_success_rate(rows[rows["model"] == "absent"])


def test_thresholds_are_float32_like_the_cosines():
    # float32(0.1) is just above 0.1: against a float64 threshold of 0.1 it would count as above (torch, which
    # the rates used to be computed with, compares a float32 tensor with float32(0.1): not above).
    rows = _frame(_rows([float(np.float32(0.1))], tau1=0.1))
    assert attack_success_rate(rows) == 0.0


def test_summary_from_hand_made_rows_has_every_key_and_value():
    s = dict(cos_source=[0.9, 0.2])
    rows = _frame(
        _rows([0.6, 0.2], kind="clean", model="a", **s),
        _rows([0.7, 0.3], kind="attr_only", model="a", **s),
        _rows([0.8, 0.9], model="a", cos_restored_target=[0.05, 0.2], cos_restored_source=[0.6, 0.7], **s),
        _rows([0.4, 0.9], model="a", transform="jpeg", cos_restored_target=[0.05, 0.0],
              cos_restored_source=[0.1, 0.7], **s),
        _rows([0.1, 0.1], kind="clean", model="b", role="black_box", pair=0.7, **s),
        _rows([0.1, 0.1], kind="attr_only", model="b", role="black_box", pair=0.7, **s),
        _rows([0.6, 0.1], model="b", role="black_box", pair=0.7, cos_restored_target=[0.2, 0.2],
              cos_restored_source=[0.9, 0.9], **s),
        _rows([0.1, 0.1], model="b", role="black_box", transform="jpeg", pair=0.7,
              cos_restored_target=[0.2, 0.2], cos_restored_source=[0.9, 0.9], **s),
    )
    out = summary_metrics(rows, prefix="val/", intervals=False)
    expect_a = {"asr_clean": 0.5, "asr_attr_only": 0.5, "target_pair_cos": 0.5, "target_pair_verified": 0.0,
                "idr_clean": 0.5, "asr": 1.0, "esr": 0.5, "esr_unrestored": 0.0, "idr": 1.0, "cos": 0.85,
                "asr@jpeg": 0.5, "esr@jpeg": 1.0, "esr_unrestored@jpeg": 0.0, "idr@jpeg": 0.5, "cos@jpeg": 0.65,
                "esr_clean": 0.0, "esr_attr_only": 0.0, "n_images": 2, "n_identities": 0, "n_images@jpeg": 2,
                "n_identities@jpeg": 0}
    for key, value in expect_a.items():
        assert out[f"val/{key}/a"] == pytest.approx(value), key
        assert out[f"val/{key}/surrogates_mean"] == pytest.approx(value), key
    assert out["val/target_pair_verified/b"] == 1.0 and out["val/target_pair_cos/b"] == pytest.approx(0.7)
    assert out["val/asr/b"] == pytest.approx(0.5) and out["val/esr/black_box_mean"] == 0.0
    assert len(out) == 2 * 2 * len(expect_a)  # per model + one group mean each


def test_summary_leaves_out_what_a_scheme_cannot_give():
    rows = _frame(_rows([0.6, 0.2], kind="clean"), _rows([0.8, 0.2]))  # no edit, no erasion, no identities
    out = summary_metrics(rows, intervals=False)
    assert set(out) == {f"{k}/{g}" for k in ("asr_clean", "esr_clean", "target_pair_cos", "target_pair_verified",
                                              "asr", "esr_unrestored", "cos", "n_images", "n_identities")
                        for g in ("m", "surrogates_mean")}


def test_attribute_accuracy_all_and_edited():
    att_a = torch.tensor([[0, 0, 1], [1, 0, 0]], dtype=torch.float32)
    att_b = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.float32)  # edited: (0,0) and (1,1)
    pred = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.float32)  # right on (0,0), wrong on (1,1)
    acc = attribute_accuracy(pred, att_b, att_a)
    assert acc["all"] == pytest.approx(4 / 6)
    assert acc["edited"] == pytest.approx(0.5)
    assert acc["n_edited"] == 2
