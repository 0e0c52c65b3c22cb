"""ESR's ceilings and destroyed control, and identity-bootstrap intervals on every summary rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_metrics import _frame, _rows

from erasablemask.analysis.rates import bootstrap_interval
from erasablemask.experiments.evaluation.metrics import destroy, identity_bootstrap_interval, summary_metrics


def test_identity_bootstrap_is_the_analysis_layers_algorithm_number_for_number():
    rng = np.random.default_rng(3)
    hits = (rng.random(300) < 0.3).astype(float)
    clusters = np.array([f"id:{k}" for k in rng.integers(0, 25, 300)], dtype=object)
    ours = identity_bootstrap_interval(hits, clusters, n_boot=500, seed=4)
    assert ours == bootstrap_interval(hits, clusters, n_boot=500, seed=4)
    assert ours[0] < hits.mean() < ours[1]
    # Identities, not images, are resampled: 10 identities of 30 identical rows give a wider interval
    # than 300 independent rows with the same share.
    grouped = np.repeat((np.arange(10) < 3).astype(float), 30)
    lo_g, hi_g = identity_bootstrap_interval(grouped, np.repeat(np.arange(10), 30))
    lo_i, hi_i = identity_bootstrap_interval(grouped, np.arange(300))
    assert hi_g - lo_g > 2 * (hi_i - lo_i)


def test_summary_has_esr_ceilings_destroyed_control_and_intervals():
    ident = {"cos_source": [0.9, 0.8, 0.7, 0.2]}

    def with_ids(block):
        block["source_identity"] = [0, 0, 1, 2]
        return block

    rows = _frame(
        with_ids(_rows([0.05, 0.2, 0.0, 0.3], kind="clean", **ident)),
        with_ids(_rows([0.0, 0.0, 0.2, 0.3], kind="attr_only", **ident)),
        with_ids(_rows([0.0, 0.05, 0.0, 0.0], kind="destroyed", cos_source=[0.1, 0.2, 0.6, 0.0])),
        with_ids(
            _rows(
                [0.8, 0.9, 0.2, 0.6],
                cos_restored_target=[0.0, 0.3, 0.0, 0.0],
                cos_restored_source=[0.9, 0.1, 0.7, 0.6],
                **ident,
            )
        ),
    )
    out = summary_metrics(rows, n_boot=400)
    assert out["esr_clean/m"] == 0.5 and out["esr_attr_only/m"] == 0.5  # Eq. 18 on faces that never were the target
    assert out["esr_destroyed/m"] == 1.0 and out["idr_destroyed/m"] == 0.25  # a blur passes ESR, not IDR
    assert out["esr/m"] == 0.75 and out["idr/m"] == 0.75 and out["idr_clean/m"] == 0.75
    assert out["esr_unrestored/m"] == 0.0 and out["n_images/m"] == 4 and out["n_identities/m"] == 3
    for key in ("asr", "esr", "idr", "esr_clean", "esr_destroyed", "idr_clean", "asr_clean", "esr_unrestored"):
        lo, hi = out[f"{key}_lo/m"], out[f"{key}_hi/m"]
        assert 0 <= lo <= out[f"{key}/m"] <= hi <= 1, key
        assert out[f"{key}_lo/surrogates_mean"] == lo  # one model: the group's pooled rows are its rows
    assert "cos_lo/m" not in out and "n_images_lo/m" not in out  # intervals only for rates
    assert out["asr_lo/m"] < out["asr_hi/m"]


def test_destroy_is_a_heavy_blur_that_keeps_shape_and_range():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = destroy(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert y.diff(dim=-1).abs().mean() < 0.05 * x.diff(dim=-1).abs().mean()  # high frequencies gone
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(destroy(flat), flat, atol=1e-6)  # a blur preserves constants (reflected borders)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        destroy(x[0])


def _seeded(cos_target, seed, ident, **kw):
    block = _rows(cos_target, **kw)
    block["seed"] = [seed] * len(cos_target)
    block["source_identity"] = list(ident)
    return block


def test_rate_across_seeds_is_the_mean_of_per_seed_rates_with_a_two_level_interval():
    from erasablemask.experiments.evaluation.metrics import rate_across_seeds

    ids = [0, 0, 1, 1, 2, 2, 3, 3]
    rows = _frame(_seeded([0.9] * 8, 0, ids), _seeded([0.9] * 4 + [0.0] * 4, 1, ids), _seeded([0.0] * 8, 2, ids))
    r = rate_across_seeds(rows, "asr", n_boot=500)
    assert r["value"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert r["n_seeds"] == 3 and r["n_identities"] == 4 and r["n"] == 24
    assert r["lo"] <= 0.1 and r["hi"] >= 0.9  # seeds disagree completely: the interval says so
    one = rate_across_seeds(rows[rows["seed"] == 1], "asr", n_boot=500)
    assert one["value"] == 0.5 and one["lo"] < 0.5 < one["hi"]
    with pytest.raises(ValueError, match="unknown rate"):
        rate_across_seeds(rows, "nope")


def test_paired_difference_matches_rows_and_cancels_what_both_share():
    from erasablemask.experiments.evaluation.metrics import paired_difference

    ids = [0, 1, 2, 3, 4, 5]
    a = _frame(*[_seeded([0.9, 0.9, 0.9, 0.0, 0.9, 0.0], s, ids) for s in (0, 1, 2)])
    b = _frame(*[_seeded([0.9, 0.0, 0.9, 0.0, 0.0, 0.0], s, ids) for s in (0, 1, 2)])
    d = paired_difference(a, b, "asr", n_boot=500)
    assert d["value"] == pytest.approx(2 / 6) and d["n"] == 18 and d["n_seeds"] == 3
    assert 0 < d["lo"] <= d["value"] <= d["hi"] <= 0.67
    assert paired_difference(a, a, "asr", n_boot=100)["value"] == 0.0
    with pytest.raises(ValueError, match="pair into"):
        paired_difference(a, b[b["seed"] != 2], "asr")


def test_claims_table_has_each_measure_with_ceilings_and_the_paired_comparison():
    from erasablemask.experiments.evaluation.claims import claims_rows, format_claims

    ids = [0, 1, 2, 3]

    def method(asr_cos):
        blocks = []
        for s in (0, 1):
            common = dict(role="black_box", cos_source=[0.9, 0.9, 0.9, 0.2])
            blocks += [
                _seeded([0.0, 0.0, 0.0, 0.9], s, ids, kind="clean", **common),
                _seeded([0.0, 0.0, 0.2, 0.0], s, ids, kind="attr_only", **common),
                _seeded(
                    [0.0, 0.0, 0.0, 0.0], s, ids, kind="destroyed", role="black_box", cos_source=[0.0, 0.0, 0.0, 0.0]
                ),
                _seeded(
                    asr_cos,
                    s,
                    ids,
                    cos_restored_target=[0.0, 0.0, 0.5, 0.0],
                    cos_restored_source=[0.9, 0.9, 0.0, 0.9],
                    **common,
                ),
            ]
        return _frame(*blocks)

    rows = claims_rows(
        {"meta_auxiliary": method([0.9, 0.9, 0.9, 0.0]), "ensemble": method([0.9, 0.0, 0.0, 0.0])},
        pairs=[("meta_auxiliary", "ensemble")],
        roles=["black_box"],
        n_boot=200,
    )
    got = {(r["method"], r["measure"]): r for r in rows}
    meta = {
        m: got["meta_auxiliary", m]["value"]
        for m in (
            "ASR",
            "ESR",
            "ESR clean",
            "ESR attr-only",
            "ESR unrestored",
            "ESR destroyed",
            "IDR",
            "IDR clean",
            "IDR destroyed",
            "ASR clean",
            "ASR attr-only",
        )
    }
    assert meta == {
        "ASR": 0.75,
        "ESR": 0.75,
        "ESR clean": 0.75,
        "ESR attr-only": 0.75,
        "ESR unrestored": 0.25,
        "ESR destroyed": 1.0,
        "IDR": 0.75,
        "IDR clean": 0.75,
        "IDR destroyed": 0.0,
        "ASR clean": 0.25,
        "ASR attr-only": 0.0,
    }
    paired = got["meta_auxiliary - ensemble", "ASR (paired)"]
    assert paired["value"] == 0.5 and paired["n_seeds"] == 2 and paired["n"] == 8
    assert all(r["lo"] <= r["value"] <= r["hi"] for r in rows)
    text = format_claims(rows)
    assert "ESR destroyed" in text and "meta_auxiliary - ensemble" in text and len(text.splitlines()) == len(rows) + 1
