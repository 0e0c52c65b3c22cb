"""erasablemask report: tables (CSV, Markdown), figures (PNG) and one self-contained HTML page; the CLI verbs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _synthetic_records import PNG_MAGIC, make_runs, tiny_png

from erasablemask.analysis.collect import collect_run_dirs
from erasablemask.analysis.report import write_report
from erasablemask.platform.cli.main import main


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    collect_run_dirs([make_runs(root / "runs")], root / "ds")
    write_report(root / "ds", root / "out", n_boot=100)
    return root / "out"


def test_report_writes_each_table_as_csv_and_markdown_and_figures_as_png(report_dir: Path):
    tables = sorted(p.name for p in (report_dir / "tables").iterdir())
    assert tables == ["fig5_gamma_miniworld.csv"] + [
        f"{k}.{x}" for k in ("table2_ceilings_miniworld", "table2_miniworld", "table5_miniworld") for x in ("csv", "md")]
    fig5 = pd.read_csv(report_dir / "tables" / "fig5_gamma_miniworld.csv")  # Fig. 5's numbers behind the plot
    assert {"param", "value", "held", "model", "rate", "estimate", "lo", "hi", "n"} <= set(fig5.columns)
    assert set(fig5["param"]) == {"protection.gamma"} and fig5["value"].nunique() >= 2
    assert ((fig5["lo"] <= fig5["estimate"]) & (fig5["estimate"] <= fig5["hi"])).all()
    report_md = (report_dir / "report.md").read_text()
    assert "The paper's reading: §V-G2" in report_md and "| protection.gamma | model | ASR | ESR | IDR |" in report_md
    cells = pd.read_csv(report_dir / "tables" / "table2_miniworld.csv")
    assert {"row", "column", "metric", "value", "lo", "hi", "n", "n_identities", "n_seeds", "n_targets",
            "runs", "paper", "paper_source"} <= set(cells.columns)
    rated = cells.dropna(subset=["value"])
    assert ((rated["lo"] <= rated["value"]) & (rated["value"] <= rated["hi"])).all()
    assert cells["paper"].isna().all()  # mini-world: nothing of the paper's beside ours
    md = (report_dir / "tables" / "table2_miniworld.md").read_text()
    assert md.startswith("## Table II") and "| Clean |" in md and "does not match" in md and "Built from runs" in md
    figures = sorted(p.name for p in (report_dir / "figures").iterdir())
    assert figures == ["fig5_gamma_miniworld.png", "table2_miniworld.png", "table5_miniworld.png"]
    assert all((report_dir / "figures" / f).read_bytes().startswith(PNG_MAGIC) for f in figures)


def test_html_is_self_contained_and_lists_what_each_table_was_built_from(report_dir: Path):
    page = (report_dir / "index.html").read_text()
    assert page.count('<table class="results">') == 3
    assert page.count('<img src="data:image/png;base64,') == 4  # three figures and the grid (Fig. 4)
    assert "http://" not in page.replace('href="http', "") and "<link" not in page  # nothing fetched
    for text in ("Table II: ASR and ESR against black-box FR models (miniworld)", "Table V: ASR and ESR after",
                 "Table VI: image quality", "Not built: not in records", "Table VII", "attack.method",
                 "Table III: commercial FR systems", "Table IV: robust FR models", "Fig. 5", "Fig. 4",
                 'Built from runs: <a href="#run-em_g05">em_g05</a>', 'id="run-pgd"', "protection.gamma = 0.2"):
        assert text in page, text


def test_cli_collect_then_report_and_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture):
    runs = make_runs(tmp_path / "runs")
    assert main(["collect", str(runs), "--out", str(tmp_path / "ds")]) == 0
    assert "3 added, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert main(["collect", str(runs), "--out", str(tmp_path / "ds")]) == 0
    assert "0 added, 0 updated, 3 unchanged" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'out' / 'index.html'}" in out and "table7" in out and "not built" in out
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "is not an analysis dataset" in capsys.readouterr().err
    assert main(["collect", "--experiment", "x", "--out", str(tmp_path / "d3")]) == 2
    assert "needs --tracking-uri" in capsys.readouterr().err


def test_sections_follow_the_paper_and_the_contents_name_what_is_not_built(report_dir: Path):
    page = (report_dir / "index.html").read_text()
    order = ["table2_miniworld", "table2_ceilings_miniworld", "table3", "table4", "table5_miniworld",
             "table6", "table7", "fig4", "fig5", "pareto", "runs"]
    at = [page.index(f'<section id="{key}">') for key in order]
    assert at == sorted(at)
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert [nav.index(f'href="#{key}"') for key in order] == sorted(nav.index(f'href="#{key}"') for key in order)
    assert 'Table IV: robust FR models</a> (not built)' in nav and "Fig. 5: γ and β</a></li>" in nav
    md = (report_dir / "report.md").read_text()
    assert md.index("## Table III") < md.index("## Table V") < md.index("## Fig. 4") < md.index("## Pareto")
    assert "## Table VII: ablation of the meta-auxiliary attack\n\nNot built: needs evaluated runs" in md


def test_fig4_grid_is_shown_at_twice_its_size(report_dir: Path):
    page = (report_dir / "index.html").read_text()
    grid = page[page.index('<section id="fig4">'):]
    width = int(grid.split('width="', 1)[1].split('"', 1)[0])
    assert width == 2 * int.from_bytes(tiny_png()[16:20], "big") and 'class="grid"' in grid


def test_fig5_curves_hold_the_other_parameter_at_one_value():
    """γ's curve at one β (the one most runs share; ties: the middle value), β's at one γ: never pooled."""
    import pandas as pd

    from erasablemask.analysis.figures import _held_fixed

    lines = pd.DataFrame({  # the paper's design: γ line at β 0.5, β line at γ 0.05
        "run": list("abcdef"),
        "params.protection.gamma": [0.0, 0.05, 0.1, 0.3, 0.05, 0.05],
        "params.protection.beta": [0.5, 0.5, 0.5, 0.5, 0.3, 0.7],
    })
    runs, held = _held_fixed(lines, "protection.gamma")
    assert held == {"protection.beta": 0.5} and list(runs["run"]) == list("abcd")
    runs, held = _held_fixed(lines, "protection.beta")
    assert held == {"protection.gamma": 0.05} and list(runs["run"]) == list("bef")
    grid = pd.DataFrame([(f"{g}-{b}", g, b) for g in (0.0, 0.1) for b in (0.3, 0.5, 0.7)],
                        columns=["run", "params.protection.gamma", "params.protection.beta"])
    runs, held = _held_fixed(grid, "protection.gamma")
    assert held == {"protection.beta": 0.5} and sorted(runs["run"]) == ["0.0-0.5", "0.1-0.5"]
    runs, held = _held_fixed(grid, "protection.beta")
    assert held == {"protection.gamma": 0.0} and len(runs) == 3
