"""``erasablemask compare``: every registered method on the same tiny experiment, one MLflow parent, one table.

A tiny run folder (stages 1-2 after one step each, tests/_curriculum_tiny.py)
gives ``erasablemask`` and SemanticAdv's generator; the mini zoo is trained
for one epoch in a private cache. Each method runs with tiny hyper-parameters.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _curriculum_tiny import BLACK_BOX, SURROGATES, tiny_config, tiny_zoo

from erasablemask.experiments import attacks
from erasablemask.experiments.config.compare import load_compare
from erasablemask.experiments.config.groups import ConfigError
from erasablemask.experiments.config.loading import dump_config
from erasablemask.platform.cli.main import main

# Tiny hyper-parameters per method (methods that need a trained run get it from the comparison's `run`).
TINY_METHODS = {
    "fgsm": {"eps": 8 / 255},
    "pgd": {"eps": 8 / 255, "steps": 2},
    "sibling": {"outer_loops": 2, "inner_loops": 1},
    "semanticadv": {"steps": 2, "refine_steps": 1},
    "erasablemask": {},
    "advfaces": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "gen_dim": 8, "dis_dim": 8},
    "gmaa": {
        "epochs": 1,
        "batch_size": 4,
        "max_steps_per_epoch": 1,
        "gen_dim": 8,
        "gen_res_blocks": 1,
        "dis_dim": 8,
        "di_copies": 1,
    },
}
EVAL = ["evaluation.max_images=4", "evaluation.transforms=[none]"]
# A smaller FR population than TINY's (the mini zoo's one epoch is most of this test's time).
SMALL_FR_POPULATION = ["data.miniworld.fr_extra_identities=24", "data.miniworld.fr_extra_images_per_identity=4"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    with tiny_zoo(tmp_path_factory.getbasetemp() / "erasablemask_home"):
        yield


@pytest.fixture(scope="module")
def tiny_run(zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (config.yaml, stages 1 and 2 after one step each)."""
    from erasablemask.experiments.curriculum.context import in_process_context
    from erasablemask.experiments.curriculum.loop import run_stage

    run = tmp_path_factory.mktemp("compare_run")
    cfg = tiny_config("stage1.epochs=1", "stage2.epochs=1", *SMALL_FR_POPULATION)
    (run / "config.yaml").write_text(dump_config(cfg))
    s1 = run_stage(cfg, 1, in_process_context(run, 1, progress=False, max_steps_per_epoch=1))
    run_stage(cfg, 2, in_process_context(run, 2, progress=False, max_steps_per_epoch=1), inputs=s1.final_checkpoint)
    return run


def _comparison_file(tmp_path: Path, run: Path, methods: dict) -> Path:
    import yaml

    path = tmp_path / "cmp.yaml"
    tree = {"name": "tiny", "run": str(run), "overrides": EVAL, "n_boot": 50, "methods": methods}
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_every_registered_method_has_tiny_hyper_parameters():
    missing = set(attacks.names()) - set(TINY_METHODS)
    assert not missing, f"add tiny hyper-parameters for {sorted(missing)} to TINY_METHODS"


@pytest.mark.slow
def test_compare_runs_every_method_into_one_parent_run_and_a_table(tiny_run: Path, tmp_path: Path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    methods = {m: hp for m, hp in TINY_METHODS.items() if m in attacks.names()}
    path = _comparison_file(tmp_path, tiny_run, methods)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "out"
    # the experiment's artifact root must be under tmp (conftest): create it first
    MlflowClient(uri).create_experiment(
        tiny_config().tracking.experiment_name, artifact_location=(tmp_path / "art").as_uri()
    )
    assert main(["compare", str(path), "--out", str(out), "--threads", "1"]) == 0
    text = capsys.readouterr().out

    rates = pd.read_csv(out / "comparison.csv")
    assert list(dict.fromkeys(rates["method"])) == list(methods)
    prot = rates[(rates["kind"] == "protected") & (rates["transform"] == "none") & (rates["rate"] == "asr")]
    for m in methods:  # every method scored on every model, on the same number of images
        sub = prot[prot["method"] == m]
        assert sorted(sub["model"]) == sorted([*SURROGATES, *BLACK_BOX]), m
        assert set(sub["n"]) == {4}
        assert ((sub["lo"] <= sub["value"]) & (sub["value"] <= sub["hi"])).all()
    # the same clean faces and targets for all: identical clean rows
    clean = rates[(rates["kind"] == "clean") & (rates["rate"] == "asr")].set_index(["method", "model"])["value"]
    assert clean.groupby("model").nunique().max() == 1
    # ESR only where the method erases
    esr_methods = set(rates[(rates["rate"] == "esr") & (rates["kind"] == "protected")]["method"])
    assert esr_methods == {"erasablemask"}
    # the printed table: one row per method, the black-box columns
    for m in methods:
        assert any(line.strip().startswith(m) for line in text.splitlines()), m
    assert f"ASR {BLACK_BOX[0]}"[:17] in text and "[" in text
    assert (out / "table.txt").read_text().strip() in text

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tiny_config().tracking.experiment_name)
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("stage") == "compare" and r.data.tags.get("method") == "compare"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(r.data.tags["method"] for r in children) == sorted(methods)
    by_method = {r.data.tags["method"]: r for r in children}
    assert by_method["pgd"].data.params["steps"] == "2" and by_method["pgd"].data.params["random_start"] == "False"
    assert float(by_method["fgsm"].data.params["eps"]) == pytest.approx(8 / 255)
    for m, r in by_method.items():
        assert r.info.status == "FINISHED"
        assert r.data.metrics["time.per_image_s"] > 0
        assert "asr.black_box_mean" in r.data.metrics
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"records.parquet", "rates.csv", "evaluation.json"} <= arts, m
        records = pd.read_parquet(out / m / "records.parquet")
        assert set(records["method"]) == {m} and set(records["run"]) == {r.info.run_id}


def test_bad_comparison_files_are_refused_before_any_work(tmp_path: Path):
    path = _comparison_file(tmp_path, tmp_path, {"pgd": {"epsilon": 0.1}})
    with pytest.raises(ConfigError, match=r"methods.pgd: no hyper-parameter epsilon; allowed: eps"):
        load_compare(path)
    path = _comparison_file(tmp_path, tmp_path, {"nope": {}})
    with pytest.raises(LookupError, match="'nope' is not a registered attack; registered: .*fgsm"):
        load_compare(path)
    path = _comparison_file(tmp_path, tmp_path / "missing", {"fgsm": {}})
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_compare(path)
    path = _comparison_file(tmp_path, tmp_path, {"semanticadv": {"generator": 1}})
    with pytest.raises(ConfigError, match="generator is supplied by compare"):
        load_compare(path)
    path = _comparison_file(tmp_path, tmp_path, {"fgsm": {}, "pgd": {}})
    with pytest.raises(ConfigError, match="--methods sibling: not in the comparison file"):
        load_compare(path).select(["sibling"])
    assert list(load_compare(path).select(["pgd"]).methods) == ["pgd"]
    assert main(["compare", str(tmp_path / "nothing.yaml")]) == 2
    assert load_compare("miniworld").methods["fgsm"]["eps"] == pytest.approx(4 / 255)  # the paper's ε


def test_the_table_shows_asr_per_black_box_model_with_intervals_and_esr_only_where_a_method_erases():
    from erasablemask.platform.compare import comparison_table

    def row(method, model, role, kind, rate, value, spread):
        return dict(method=method, model=model, role=role, transform="none", kind=kind, rate=rate, value=value,
                    lo=value - spread, hi=value + spread, n=20, n_identities=5)

    rows = []
    for method, erases in (("pgd", False), ("erasablemask", True)):
        for model, role in (("s1", "surrogate"), ("b1", "black_box"), ("b2", "black_box")):
            rows.append(row(method, model, role, "clean", "asr", 0.0, 0.0))
            rows.append(row(method, model, role, "protected", "asr", 0.5 if model == "b1" else 0.25, 0.1))
            if erases:
                rows.append(row(method, model, role, "protected", "esr", 0.9, 0.1))
    lines = comparison_table(
        pd.DataFrame(rows),
        black_box=["b1", "b2"],
        surrogates=["s1"],
        seconds_per_image={"pgd": 0.5, "erasablemask": 0.01},
    )
    by_label = {line.split()[0]: line for line in lines[2:-1]}
    assert set(by_label) == {"clean", "pgd", "erasablemask"}
    assert by_label["pgd"].split()[1:5] == ["50.0", "[40.0,", "60.0]", "25.0"]
    assert by_label["pgd"].count("-") == 2  # no ESR for a method that cannot erase
    assert "90.0 [80.0,100.0]" in by_label["erasablemask"]
    assert by_label["pgd"].split()[-3:] == ["25.0", "20", "0.500"]  # white-box mean, n, s/image
