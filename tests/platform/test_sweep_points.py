"""Explicit sweep points: one Tune grid axis of whole configurations, expanded into dotted keys per trial."""

from __future__ import annotations

from erasablemask.experiments.config.sweep import load_sweep
from erasablemask.platform.sweep import _search_params, _total_trials, _tune_space


def test_points_are_one_grid_axis_crossed_with_the_seeds():
    fig5 = load_sweep("fig5_gamma_beta")
    space = _tune_space(fig5)
    assert space["point"] == {"grid_search": [0, 1, 2, 3, 4, 5]} and _total_trials(fig5) == 6
    two_seeds = load_sweep("fig5_gamma_beta", ["seeds=[0, 1]", "space={stage2.lambda_adv: {grid: [50, 100]}}"])
    assert _total_trials(two_seeds) == 6 * 2 * 2
    assert two_seeds.trial_values({"point": 3, "seed": 1, "stage2.lambda_adv": 50}) == {
        "seed": 1, "stage2.lambda_adv": 50, "protection.gamma": 0.3, "protection.beta": 0.5}
    assert '"protection.gamma": 0.3' in _search_params(fig5, 1.0)["sweep.points"]
