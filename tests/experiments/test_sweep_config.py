"""The sweep file (experiments/config/sweep.py): shipped sweeps load, bad keys and ranges are refused by name."""

from __future__ import annotations

import pytest

from erasablemask.experiments.config.groups import ConfigError
from erasablemask.experiments.config.sweep import load_sweep, shipped_sweeps


def test_shipped_sweeps_load_and_check():
    assert {"tiny", "fig5_gamma_beta", "lambda_adv_era"} <= set(shipped_sweeps())
    tiny = load_sweep("tiny")
    assert tiny.space["stage2.lambda_adv"].kind == "loguniform" and not tiny.multi_objective
    era = load_sweep("lambda_adv_era")
    assert era.multi_objective and era.search.scheduler == "fifo"
    fig5 = load_sweep("fig5_gamma_beta")
    assert fig5.swept_keys == ["protection.gamma", "protection.beta"] and fig5.search.algorithm == "grid"
    # the paper's one-at-a-time lines: γ at β = 0.5, β at γ = 0.05 (the defaults), each point once
    assert len(fig5.points) == len({tuple(sorted(p.items())) for p in fig5.points}) == 6
    assert fig5.trial_overrides({"point": 4, "seed": 0})[-3:] == [
        "seed=0", "protection.gamma=0.05", "protection.beta=0.3"]


@pytest.mark.parametrize(
    ("points", "named"),
    [
        ("[{protection.gama: 0.1}]", "points[0] key 'protection.gama' is not a config key"),
        ("[{protection.gamma: 0.1}, {protection.beta: 2.0}]", "points[1] {'protection.beta': 2.0} is not allowed"),
        ("[{}]", "every point needs at least one key"),
        ("[{stage2.lambda_adv: 100}]", "in both space: and points:"),
    ],
)
def test_bad_points_are_refused_naming_the_point(points, named):
    over = [f"points={points}", "space={stage2.lambda_adv: {grid: [100]}}", "search={algorithm: grid, scheduler: fifo}"]
    with pytest.raises(ConfigError) as err:
        load_sweep("tiny", over)
    assert named in str(err.value)
    with pytest.raises(ConfigError, match="need search.algorithm: grid"):
        load_sweep("tiny", ["points=[{protection.gamma: 0.1}]"])


@pytest.mark.parametrize(
    ("space", "named"),
    [
        ("{stage2.lambda_adversarial: {uniform: [1, 2]}}", "'stage2.lambda_adversarial' is not a config key"),
        ("{stage2.lambda_adv: {loguniform: [0, 2]}}", "low 0.0 must be > 0"),
        ("{stage2.lambda_adv: {uniform: [5, 1]}}", "low < high"),
        ("{protection.beta: {uniform: [0.2, 1.5]}}", "'protection.beta' (uniform) value 1.5 is not allowed"),
        ("{attack.method: {choice: [meta_auxiliary, bogus]}}", "'attack.method' (choice) value 'bogus'"),
        ("{protection.gamma: {grid: [0.0, 0.1]}}", "use grid, which Optuna cannot sample"),
    ],
)
def test_bad_space_is_refused_naming_the_key(space, named):
    with pytest.raises(ConfigError) as err:
        load_sweep("tiny", [f"space={space}"])
    assert named in str(err.value)


def test_unknown_sweep_key_and_objective_are_refused():
    with pytest.raises(ConfigError, match="num_sample: unknown key"):
        load_sweep("tiny", ["num_sample=2"])
    with pytest.raises(ConfigError, match="objective metric 'asr/blackbox'"):
        load_sweep("tiny", ["objectives=[{metric: asr/blackbox, mode: max}]"])
    with pytest.raises(ConfigError, match="asha needs one objective"):
        load_sweep(
            "tiny", ["objectives=[{metric: asr/black_box_mean, mode: max}, {metric: esr/black_box_mean, mode: max}]"]
        )
