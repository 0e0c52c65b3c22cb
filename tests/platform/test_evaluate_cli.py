"""`erasablemask evaluate`: bad input fails before any work, --data replaces the data section for the evaluation
only, the rate table's intervals come from the records, and the console table shows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from erasablemask.experiments.config.loading import dump_config, load_config
from erasablemask.platform.cli.evaluate import evaluation_config, rates_lines
from erasablemask.platform.cli.main import main
from erasablemask.platform.evaluation_run import rate_table


def _records(n: int = 40) -> pd.DataFrame:
    from erasablemask.experiments.evaluation.metrics import success_flags
    from erasablemask.experiments.evaluation.records import records_frame

    rng = np.random.default_rng(0)
    cos = rng.uniform(0, 1, n).astype(np.float32)
    cols = dict(
        run=["r"] * n,
        method=["erasablemask"] * n,
        kind=["protected"] * n,
        stage=[3] * n,
        seed=[0] * n,
        split=["test"] * n,
        model=["m"] * n,
        role=["black_box"] * n,
        transform=["none"] * n,
        sample=np.arange(n),
        source_identity=np.arange(n) // 4,
        target=["t"] * n,
        cos_target=cos,
        cos_source=cos,
        cos_restored_target=1 - cos,
        cos_restored_source=cos,
        cos_target_pair=[0.8] * n,
        thr_far_0p1=[0.3] * n,
        thr_far_0p01=[0.5] * n,
        thr_far_0p001=[0.7] * n,
        tau1=[0.5] * n,
        tau2=[0.3] * n,
    )
    flags = success_flags(
        pd.DataFrame(
            {
                k: cols[k]
                for k in ("cos_target", "cos_restored_target", "cos_restored_source", "tau1", "tau2", "thr_far_0p01")
            }
        )
    )
    return records_frame({**cols, **flags})


def test_rate_table_gives_each_rate_with_its_identity_bootstrap_interval_and_counts():
    rec = _records()
    table = rate_table(rec, n_boot=200)
    asr = table[table["rate"] == "asr"].iloc[0]
    assert asr["value"] == pytest.approx(float((rec["cos_target"] > 0.5).mean()))
    assert asr["lo"] <= asr["value"] <= asr["hi"] and asr["n"] == 40 and asr["n_identities"] == 10
    esr = table[table["rate"] == "esr"].iloc[0]
    assert esr["value"] == pytest.approx(float((rec["cos_restored_target"] < 0.3).mean()))
    lines = rates_lines(table)
    assert "black_box" in lines[1] and f"{100 * asr['value']:5.1f} [" in lines[1]


def test_bad_input_fails_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["evaluate", str(tmp_path / "missing"), "--no-track"]) == 2
    assert "not a folder" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config("miniworld_demo")))
    assert main(["evaluate", str(run), "--models", "no_such_model", "--no-track"]) == 2
    assert "unknown FR models ['no_such_model']" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--transforms", "blur", "--no-track"]) == 2
    assert "--transforms: unknown ['blur']" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", "nope", "--no-track"]) == 2
    assert "has no option 'nope'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--no-track"]) == 2  # a folder without config.yaml
    assert "pass --config" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--adaptive-attacker", "--budgets", "0", "-5", "--no-track"]) == 2
    assert "--budgets [0, -5]" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--adaptive-attacker", "--attacker-faces", "1", "8", "--no-track"]) == 2
    assert "--attacker-faces [1, 8]" in capsys.readouterr().err


def test_data_replaces_the_data_section_for_the_evaluation_only(tmp_path: Path):
    src = tmp_path / "config.yaml"
    src.write_text(dump_config(load_config("miniworld_demo", ["data.image_size=64"])))
    other = tmp_path / "other_data.yaml"
    other.write_text("data:\n  miniworld:\n    n_identities: 20\n")
    run_cfg, eval_cfg = evaluation_config(src, ["evaluation.max_images=8"], str(other))
    assert run_cfg.data.miniworld.n_identities == 48 and eval_cfg.data.miniworld.n_identities == 20
    assert eval_cfg.evaluation.max_images == run_cfg.evaluation.max_images == 8
    assert eval_cfg.model == run_cfg.model  # the networks are built and checked with the run's config
    same, same_eval = evaluation_config(src, [], None)
    assert same is same_eval
