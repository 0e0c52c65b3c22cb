"""Tables II, V, VI, VII from records: values equal experiments' metrics; the paper's beside ours only if comparable."""

from __future__ import annotations

import pandas as pd
import pytest
from _synthetic_records import synthetic_records

from erasablemask.analysis.tables import all_tables, annotate, table_ii, table_ii_ceilings, table_v, table_vi, table_vii
from erasablemask.experiments.evaluation import metrics

PAPER_ZOO = {"ir152": "surrogate", "facenet": "black_box", "arcface_r100": "black_box"}


def _runs(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{"params.attack.method": "meta_auxiliary", "params.protection.gamma": "0.05", **r}
                         for r in rows])


def _world(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    records = pd.concat([
        synthetic_records("em0", seed=0, models=PAPER_ZOO, transforms=("none", "jpeg")),
        synthetic_records("em1", seed=1, models=PAPER_ZOO, transforms=("none", "jpeg")),
        synthetic_records("pgd0", "pgd", seed=0, models=PAPER_ZOO, erases=False, attr_only=False),
    ], ignore_index=True)
    runs = _runs({"run": "em0", "params.data.kind": dataset, "params.seed": "0"},
                 {"run": "em1", "params.data.kind": dataset, "params.seed": "1"},
                 {"run": "pgd0", "params.data.kind": dataset, "params.seed": "0"})
    return records, runs


def _cell(table, row, column, metric):
    c = table.cells
    (hit,) = c[(c["row"] == row) & (c["column"] == column) & (c["metric"] == metric)].to_dict("records")
    return hit


def test_table_ii_cells_are_metrics_over_the_pooled_seeds_with_the_papers_value_beside_them():
    records, runs = _world("celebahq")
    (t,) = table_ii(annotate(records, runs), n_boot=200)
    em = records[(records["method"] == "erasablemask") & (records["kind"] == "protected")
                 & (records["transform"] == "none") & (records["model"] == "facenet")]
    asr = _cell(t, "erasablemask", "facenet", "ASR")
    assert asr["value"] == pytest.approx(metrics.attack_success_rate(em))
    assert _cell(t, "erasablemask", "facenet", "ESR")["value"] == pytest.approx(metrics.erasion_success_rate(em))
    assert (asr["n"], asr["n_seeds"], asr["n_identities"], asr["n_runs"]) == (36, 2, 6, 2)
    assert asr["paper"] == pytest.approx(0.64) and "CelebA-HQ block, row 'ErasableMask (ours)'" in asr["paper_source"]
    assert _cell(t, "pgd", "arcface_r100", "ASR")["paper"] == pytest.approx(0.6545)
    assert pd.isna(_cell(t, "pgd", "facenet", "ESR")["value"])  # PGD cannot erase: printed as a dash
    assert _cell(t, "Clean", "facenet", "ASR")["paper"] == pytest.approx(0.0045)
    assert _cell(t, "Attributes modified: erasablemask", "facenet", "ASR")["paper"] == pytest.approx(0.0022)
    assert "ir152" not in set(t.cells["column"])  # a surrogate is not a Table II column
    assert t.runs == ["em0", "em1", "pgd0"] and "match" in t.notes[0]


def test_on_the_mini_world_no_published_value_stands_beside_ours():
    records, runs = _world("miniworld")
    for table in all_tables(records, runs, n_boot=50):
        if not table.missing:
            assert table.cells["paper"].isna().all(), table.key
    (t,) = table_ii(annotate(records, runs), n_boot=50)
    assert t.key == "table2_miniworld" and "does not match the paper's (the synthetic mini-world" in t.notes[0]


def test_runs_that_differ_in_config_are_separate_rows_without_a_published_value():
    records, runs = _world("celebahq")
    runs.loc[runs["run"] == "em1", "params.protection.gamma"] = "0.1"
    (t,) = table_ii(annotate(records, runs), n_boot=50)
    rows = set(t.cells["row"])
    assert {"erasablemask (protection.gamma=0.05)", "erasablemask (protection.gamma=0.1)"} <= rows
    assert t.cells.loc[t.cells["row"].str.startswith("erasablemask ("), "paper"].isna().all()
    assert _cell(t, "erasablemask (protection.gamma=0.1)", "facenet", "ASR")["n_seeds"] == 1


def test_table_v_has_a_row_per_transform_and_the_papers_jpeg_value():
    records, runs = _world("celebahq")
    (t,) = table_v(annotate(records, runs), n_boot=50)
    c = t.cells
    jpeg = c[(c["row"] == "erasablemask") & (c["block"] == "jpeg") & (c["column"] == "facenet")
             & (c["metric"] == "ASR")]
    rows = records[(records["method"] == "erasablemask") & (records["transform"] == "jpeg")
                   & (records["model"] == "facenet") & (records["kind"] == "protected")]
    assert jpeg["value"].item() == pytest.approx(metrics.attack_success_rate(rows))
    assert jpeg["paper"].item() == pytest.approx(0.638)
    assert c.loc[c["block"] == "none", "paper"].isna().all()  # Table V prints no unprocessed row


def test_ceilings_are_eq18_on_the_clean_and_attribute_only_faces():
    records, runs = _world("miniworld")
    (t,) = table_ii_ceilings(annotate(records, runs), n_boot=50)
    sel = records[(records["method"] == "erasablemask") & (records["model"] == "facenet")]
    clean, attr = sel[sel["kind"] == "clean"], sel[sel["kind"] == "attr_only"]
    prot = sel[(sel["kind"] == "protected") & (sel["transform"] == "none")]
    expect = {"ESR restored": metrics.erasion_success_rate(prot),
              "ESR without restorer": metrics.erasion_success_rate(prot, cos="cos_target"),
              "ESR ceiling: clean faces": metrics.erasion_success_rate(clean, cos="cos_target"),
              "ESR ceiling: attribute-only faces": metrics.erasion_success_rate(attr, cos="cos_target"),
              "IDR restored": metrics.identity_restoration_rate(prot),
              "IDR ceiling: clean faces": metrics.identity_restoration_rate(clean, cos="cos_source")}
    for measure, value in expect.items():
        assert _cell(t, "erasablemask", "facenet", measure)["value"] == pytest.approx(value), measure
    assert "pgd" not in set(t.cells["row"])  # cannot erase: no ceilings


def test_table_vii_compares_runs_whose_attack_method_differs():
    records, runs = _world("celebahq")
    (missing,) = table_vii(annotate(records, runs), runs)
    assert missing.missing and "attack.method" in missing.missing and "meta_auxiliary" in missing.missing
    runs.loc[runs["run"] == "em1", "params.attack.method"] = "ensemble"
    (t,) = table_vii(annotate(records, runs), runs, n_boot=50)
    ens = _cell(t, "erasablemask, attack.method=ensemble", "facenet", "ASR")
    assert ens["runs"] == "em1" and ens["paper"] == pytest.approx(0.5822)
    meta = _cell(t, "erasablemask, attack.method=meta_auxiliary", "arcface_r100", "ASR")
    assert meta["paper"] == pytest.approx(0.9044)
    assert not [n for n in t.notes if "also differ" in n]
    runs.loc[runs["run"] == "em1", "params.protection.gamma"] = "0.2"
    (t,) = table_vii(annotate(records, runs), runs, n_boot=50)
    assert any("also differ in ['protection.gamma']" in n for n in t.notes)


def test_table_vi_says_not_in_records_or_shows_run_level_means():
    records, runs = _world("celebahq")
    (t,) = table_vi(records, runs)
    assert t.missing.startswith("not in records")
    runs["metrics.test/quality/l1_protected_vs_attr_only"] = [0.02, 0.04, None]
    (t,) = table_vi(records, runs)
    l1 = _cell(t, "erasablemask", "L1", "L1")
    assert l1["value"] == pytest.approx(0.03) and l1["n_runs"] == 2 and l1["paper"] == pytest.approx(0.0357)
    assert t.notes[0].startswith("Not in records: per-sample quality")
