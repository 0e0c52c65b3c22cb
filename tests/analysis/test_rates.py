"""analysis' rates equal experiments' metrics on the same rows; intervals resample identities, not rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _synthetic_records import synthetic_records

from erasablemask.analysis.rates import RATES, bootstrap_interval, estimate, successes
from erasablemask.experiments.evaluation import metrics


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.concat([synthetic_records("r1", seed=0), synthetic_records("r2", seed=1, p_attack=0.4)],
                     ignore_index=True)


def _cells(rows: pd.DataFrame):
    for (model, kind, transform), sub in rows.groupby(["model", "kind", "transform"]):
        yield f"{model}/{kind}/{transform}", sub


def test_asr_esr_idr_from_flags_equal_experiments_metrics_on_every_cell(rows):
    checked = 0
    for name, sub in _cells(rows):
        assert estimate(sub, "asr", n_boot=0).value == pytest.approx(metrics.attack_success_rate(sub)), name
        if sub["cos_restored_target"].notna().all():
            assert estimate(sub, "esr", n_boot=0).value == pytest.approx(metrics.erasion_success_rate(sub)), name
            assert estimate(sub, "idr", n_boot=0).value == pytest.approx(
                metrics.identity_restoration_rate(sub)), name
            checked += 1
    assert checked == 3 * 2  # three models x two protected transforms


def test_ceilings_equal_metrics_with_the_other_cosine(rows):
    for name, sub in _cells(rows):
        assert estimate(sub, "esr_unrestored", n_boot=0).value == pytest.approx(
            metrics.erasion_success_rate(sub, cos="cos_target")), name
        assert estimate(sub, "idr_unrestored", n_boot=0).value == pytest.approx(
            metrics.identity_restoration_rate(sub, cos="cos_source")), name


def test_a_rate_some_rows_lack_is_none_where_metrics_refuses(rows):
    clean = rows[rows["kind"] == "clean"]
    with pytest.raises(ValueError, match="cos_restored_target"):
        metrics.erasion_success_rate(clean)
    e = estimate(clean, "esr")
    assert e.value is None and e.lo is None and e.n == len(clean)
    assert np.isnan(successes(clean, "esr")).all()


def test_counts_behind_a_cell(rows):
    sub = rows[(rows["model"] == "bb_one") & (rows["kind"] == "protected") & (rows["transform"] == "none")]
    e = estimate(sub, "asr", n_boot=100)
    assert (e.n, e.n_identities, e.n_seeds, e.n_targets, e.n_runs, e.runs) == (36, 6, 2, 2, 2, ("r1", "r2"))
    assert e.lo <= e.value <= e.hi


def test_bootstrap_keeps_an_identitys_rows_together():
    # Two identities of 50 rows: one always succeeds, one never. Resampling identities can draw either twice
    # (share 0 or 1); resampling rows would give a narrow interval around 0.5.
    hits = np.r_[np.ones(50), np.zeros(50)]
    lo, hi = bootstrap_interval(hits, np.r_[np.zeros(50), np.ones(50)], n_boot=2000, seed=0)
    assert (lo, hi) == (0.0, 1.0)
    lo_rows, hi_rows = bootstrap_interval(hits, np.arange(100), n_boot=2000, seed=0)
    assert 0.35 < lo_rows < 0.5 < hi_rows < 0.65
    assert bootstrap_interval(hits, np.arange(100), n_boot=2000, seed=0) == (lo_rows, hi_rows)  # seeded


def test_rows_without_identity_are_their_own_clusters():
    df = synthetic_records("r", n_identities=2, per_identity=10)
    sub = df[(df["model"] == "bb_one") & (df["kind"] == "protected") & (df["transform"] == "none")].copy()
    sub["source_identity"] = pd.array([None] * len(sub), dtype="Int64")
    e = estimate(sub, "asr", n_boot=500)
    assert e.n_identities == 0 and e.lo < e.value < e.hi


def test_unknown_rate_names_the_known_ones(rows):
    with pytest.raises(KeyError, match="asr"):
        estimate(rows, "fid")
    assert set(RATES) == {"asr", "esr", "idr", "esr_unrestored", "idr_unrestored",
                          "api_asr_1e-3", "api_asr_1e-4", "api_asr_1e-5"}
