"""``erasablemask report DATASET --out DIR``: the paper's tables and figures from the analysis dataset alone.

Writes, under ``DIR``:

- ``index.html``: one static, self-contained page (styles inline, figures
  embedded as data URIs) with every table, its notes and the runs it was
  built from, the figures, and the runs with their configs and MLflow links;
- ``tables/<key>.csv`` (the long cells: value, interval, counts, paper
  value and its source) and ``tables/<key>.md`` (the printed table);
  ``report.md``: every table in one Markdown file;
- ``figures/<name>.png``: the same figures as files.

A table the dataset cannot give is listed with the reason (e.g. Table VI's
"not in records"), never left out silently.
"""

from __future__ import annotations

import base64
import html
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from erasablemask.analysis.dataset import grid_path, load_records, load_runs, write_bytes_atomic
from erasablemask.analysis.figures import SWEEP_PARAMS, rates_by_model, rates_by_transform, sweep_curves, sweep_points
from erasablemask.analysis.paper_values import FIG5_PAPER_READING
from erasablemask.analysis.render import pipe_table, to_html, to_markdown
from erasablemask.analysis.tables import Table, all_tables, annotate

__all__ = ["Report", "write_report", "NOT_IN_RECORDS"]

# Parts of the paper the records cannot give yet, with the reason printed in the report.
NOT_IN_RECORDS = {
    "Table III: commercial FR systems": "not in records: no evaluation collects confidences from Aliyun, Face++ or "
                                        "Tencent (no network access from these machines).",
    "Table IV: robust FR models": "not in records: no adversarially fine-tuned (robust) FR model has been evaluated.",
    "Pareto front (multi-objective sweep)": "not in records: needs a multi-objective sweep's runs with quality "
                                            "metrics.",
}
# Section id of each NOT_IN_RECORDS entry, and the page's order: the paper's tables, then its figures.
_MISSING_IDS = {"Table III: commercial FR systems": "table3", "Table IV: robust FR models": "table4",
                "Pareto front (multi-objective sweep)": "pareto"}
_SECTION_ORDER = ("table2_ceilings", "table2", "table3", "table4", "table5", "table6", "table7", "fig4", "fig5",
                  "pareto")


def _position(section_id: str) -> tuple[float, str]:
    """Where a section goes on the page: by :data:`_SECTION_ORDER` (``table2_ceilings`` right after ``table2``)."""
    for i, prefix in enumerate(_SECTION_ORDER):
        if section_id.startswith(prefix):
            return ({"table2_ceilings": 1.5, "table2": 1.0}.get(prefix, float(i)), section_id)
    return (float(len(_SECTION_ORDER)), section_id)


@dataclass
class _Section:
    """One part of the page: its anchor, heading, its HTML, and why it was not built (None: built)."""

    id: str
    title: str
    html: str
    missing: str | None = None
    markdown: str | None = None  # its report.md body, where it is not a Table's


def _missing_section(section_id: str, title: str, why: str) -> _Section:
    e = html.escape
    return _Section(section_id, title, f'<section id="{e(section_id)}"><h2>{e(title)}</h2>'
                                       f'<p class="missing">Not built: {e(why)}</p></section>', why)

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1500px}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table.results,table.runs{border-collapse:collapse;font-size:.8em;margin:.5em 0}
table.results th,table.results td,table.runs th,table.runs td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}
table.results th{background:#f3f3f3;text-align:left}
.v{font-weight:600}.c{color:#666;font-size:.85em}.p{color:#a33;font-size:.85em}
.note{color:#555;font-size:.9em}.missing{color:#a33}
img{max-width:100%;border:1px solid #ddd} img.grid{height:auto;image-rendering:pixelated}
details{margin:.3em 0} code{background:#f3f3f3;padding:1px 3px}
"""


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    out: Path
    index_html: Path
    tables: list[Table]
    figures: dict[str, Path] = field(default_factory=dict)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _figure_html(name: str, png: bytes, caption: str) -> str:
    e = html.escape
    return (f'<figure id="fig-{e(name)}"><img src="{_data_uri(png)}" alt="{e(caption)}">'
            f"<figcaption>{e(caption)} (<a href=\"figures/{e(name)}.png\">figures/{e(name)}.png</a>)"
            f"</figcaption></figure>")


def _grid_html(run: str, png: bytes) -> str:
    """Fig. 4's grid of ``run`` shown at twice its size, pixels kept sharp (the faces are small)."""
    width = struct.unpack(">I", png[16:20])[0] if png[12:16] == b"IHDR" else 0
    size = f' width="{2 * width}"' if width else ""
    return (f'<figure><img src="{_data_uri(png)}" class="grid"{size} alt="protection grid of run {html.escape(run)}">'
            f"<figcaption>run {html.escape(run)}</figcaption></figure>")


def _run_link(run: pd.Series) -> str:
    """A link to the run in the MLflow UI (server URIs), or the command that opens the UI (sqlite stores)."""
    e = html.escape
    uri = run.get("tracking_uri")
    if not isinstance(uri, str) or not uri:
        return "not tracked"
    run_id = run.get("mlflow_run_id") if pd.notna(run.get("mlflow_run_id")) else run["run"]
    if uri.startswith(("http://", "https://")):
        url = f"{uri.rstrip('/')}/#/experiments/{run.get('experiment_id')}/runs/{run_id}"
        return f'<a href="{e(url)}">{e(str(run_id))}</a>'
    return f"<code>mlflow ui --backend-store-uri {e(uri)}</code>, run {e(str(run_id))}"


def _text(value: object) -> str:
    """``value`` as escaped text; nulls (None, NaN) as nothing."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return html.escape(str(value))


def _runs_html(runs: pd.DataFrame) -> str:
    rows = []
    for _, run in runs.sort_values("run").iterrows():
        params = {k[len("params."):]: v for k, v in run.items() if k.startswith("params.") and pd.notna(v)}
        tags = {k[len("tags."):]: v for k, v in run.items() if k.startswith("tags.") and pd.notna(v)}
        config = "<br>".join(f"{_text(k)} = {_text(v)}" for k, v in sorted(params.items())) or "(no params)"
        cells = [run["run"], run.get("run_name"), run.get("methods"), tags.get("dataset", params.get("data.kind")),
                 params.get("seed"), run.get("status")]
        rows.append(f'<tr id="run-{_text(run["run"])}">' + "".join(f"<td>{_text(c)}</td>" for c in cells)
                    + f"<td>{_run_link(run)}</td><td>{_text(run.get('run_dir'))}</td>"
                    f"<td><details><summary>{len(params)} params</summary>{config}</details></td></tr>")
    head = ("<tr><th>run</th><th>name</th><th>methods</th><th>data set</th><th>seed</th><th>status</th>"
            "<th>MLflow</th><th>run folder</th><th>config</th></tr>")
    return f'<table class="runs"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _table_section(table: Table, figure: str) -> str:
    e = html.escape
    parts = [f'<section id="{e(table.key)}"><h2>{e(table.title)}</h2>']
    if table.missing:
        parts.append(f'<p class="missing">Not built: {e(table.missing)}</p></section>')
        return "\n".join(parts)
    parts += [to_html(table)]
    parts += [f'<p class="note">{e(n)}</p>' for n in table.notes]
    links = ", ".join(f'<a href="#run-{e(r)}">{e(r)}</a>' for r in table.runs)
    parts += [f'<p class="note">Built from runs: {links}. Files: <a href="tables/{e(table.key)}.csv">CSV</a>, '
              f'<a href="tables/{e(table.key)}.md">Markdown</a>.</p>', figure, "</section>"]
    return "\n".join(parts)


def _fig5_cells(points: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Fig. 5's numbers as a table: one row per swept value and model, a cell per rate (%, interval)."""
    rates = list(dict.fromkeys(points["rate"]))
    head = [points["param"].iloc[0], "model"] + [r.upper() for r in rates]
    rows = []
    for (value, model), at in points.groupby(["value", "model"], sort=False):
        cells = [f"{value:g}", model]
        for rate in rates:
            c = at[at["rate"] == rate]
            cells.append("-" if c.empty else f"{100 * c['estimate'].iloc[0]:.1f} "
                         f"[{100 * c['lo'].iloc[0]:.1f}, {100 * c['hi'].iloc[0]:.1f}]")
        rows.append(cells)
    rows.sort(key=lambda r: float(r[0]))  # stable: models keep their order within a value
    return head, rows


def _fig5_table_html(points: pd.DataFrame) -> str:
    head, rows = _fig5_cells(points)
    e = html.escape
    return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
            + f'<p class="note">Held: {e(points["held"].iloc[0] or "nothing")}; {e(_fig5_counts(points))}</p>')


def _fig5_table_md(points: pd.DataFrame) -> str:
    head, rows = _fig5_cells(points)
    return "\n".join(pipe_table(head, rows)) + f"\n\nHeld: {points['held'].iloc[0] or 'nothing'}; {_fig5_counts(points)}\n"


def _fig5_counts(points: pd.DataFrame) -> str:
    n, ids = sorted(set(points["n"].astype(int))), sorted(set(points["n_identities"].astype(int)))
    return (f"rates in % with 95 % identity-bootstrap intervals, black-box models, no transform; "
            f"{'/'.join(map(str, n))} images of {'/'.join(map(str, ids))} source identities per cell.")


def _figures(table: Table) -> dict[str, tuple[bytes, str]]:
    if table.missing or table.cells.empty or not table.percent:
        return {}
    if table.key.startswith("table2_ceilings"):
        return {}
    if table.key.startswith("table5"):
        return {f"{table.key}": (rates_by_transform(table.cells, table.title), table.title)}
    return {f"{table.key}": (rates_by_model(table.cells, table.title), table.title)}


def write_report(dataset: Path, out: Path, *, n_boot: int = 2000) -> Report:
    """Build every table and figure the dataset allows and write them under ``out`` (module docstring).

    Args:
        dataset: an analysis dataset (``erasablemask collect``).
        out: the report folder (created; files in it are replaced).
        n_boot: bootstrap replicates per interval.

    Raises:
        FileNotFoundError: ``dataset`` is not a dataset.
        ValueError: the dataset holds no records (names the collect command).
    """
    dataset, out = Path(dataset), Path(out)
    records, runs = load_records(dataset), load_runs(dataset)
    if records.empty:
        raise ValueError(f"dataset '{dataset}' holds no records; collect evaluated runs into it first "
                         f"(erasablemask collect RUN_DIR --out {dataset})")
    tables = all_tables(records, runs, n_boot=n_boot)
    report = Report(out, out / "index.html", tables)
    sections: list[_Section] = []
    figure_pngs: dict[str, tuple[bytes, str]] = {}
    for table in tables:
        figs = _figures(table)
        figure_pngs.update(figs)
        sections.append(_Section(table.key, table.title, _table_section(
            table, "".join(_figure_html(n, p, c) for n, (p, c) in figs.items())), table.missing))
        if not table.missing:
            write_bytes_atomic(out / "tables" / f"{table.key}.csv", table.cells.to_csv(index=False))
            write_bytes_atomic(out / "tables" / f"{table.key}.md", to_markdown(table))
    labelled = annotate(records, runs)
    fig5, fig5_md = [], []
    for param in SWEEP_PARAMS:
        for ds_name, sub in labelled.groupby("dataset"):
            points = sweep_points(sub, runs, param, n_boot=n_boot)
            png = sweep_curves(points)
            if png is not None:
                name = f"fig5_{param.split('.')[-1]}_{ds_name}"
                figure_pngs[name] = (png, f"Fig. 5: ASR, ESR and IDR against {param} ({ds_name})")
                write_bytes_atomic(out / "tables" / f"{name}.csv", points.to_csv(index=False))
                reading = FIG5_PAPER_READING[param]
                fig5.append(_figure_html(name, png, figure_pngs[name][1])
                            + f'<p class="note">The paper\'s reading: {html.escape(reading)}</p>'
                            + _fig5_table_html(points) + f'<p class="note">Files: <a href="tables/{name}.csv">CSV</a>'
                            "</p>")
                fig5_md.append(f"### {figure_pngs[name][1]}\n\nThe paper's reading: {reading}\n\n"
                               + _fig5_table_md(points))
    fig5_title = "Fig. 5: γ and β"
    sections.append(_Section("fig5", fig5_title, f'<section id="fig5"><h2>{fig5_title}</h2>{"".join(fig5)}'
                             "</section>", markdown="\n".join(fig5_md)) if fig5 else _missing_section(
        "fig5", fig5_title, "needs runs that differ in protection.gamma or protection.beta (a sweep)."))
    grids = [(r, grid_path(dataset, r)) for r in sorted(runs["run"]) if grid_path(dataset, r).is_file()]
    fig4_title = "Fig. 4: source, edited, protected, erased, target"
    sections.append(_Section("fig4", fig4_title, f'<section id="fig4"><h2>{fig4_title}</h2>' + "".join(
        _grid_html(r, p.read_bytes()) for r, p in grids[:6]) + "</section>")
        if grids else _missing_section("fig4", fig4_title, "no run in the dataset has a protection grid."))
    sections += [_missing_section(_MISSING_IDS[k], k, v) for k, v in NOT_IN_RECORDS.items()]
    sections.sort(key=lambda sec: _position(sec.id))
    for name, (png, _) in figure_pngs.items():
        report.figures[name] = write_bytes_atomic(out / "figures" / f"{name}.png", png)
    write_bytes_atomic(out / "runs.csv", runs.to_csv(index=False))
    by_key = {t.key: t for t in tables}
    markdown = ["# ErasableMask analysis report", ""] + [
        to_markdown(by_key[sec.id]) if sec.id in by_key else (
            f"## {sec.title}\n\n" + (f"Not built: {sec.missing}" if sec.missing else (
                sec.markdown or "Figures: see index.html.")) + "\n")
        for sec in sections]
    write_bytes_atomic(out / "report.md", "\n".join(markdown))
    toc = "".join(f'<li><a href="#{html.escape(sec.id)}">{html.escape(sec.title)}</a>'
                  f'{" (not built)" if sec.missing else ""}</li>' for sec in sections)
    meta = {"dataset": str(dataset.resolve()), "runs": len(runs), "records": len(records),
            "generated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    n_runs = f'{meta["runs"]} run' + ("" if meta["runs"] == 1 else "s")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ErasableMask analysis report'
            f"</title><style>{_STYLE}</style></head><body><h1>ErasableMask analysis report</h1>"
            f'<p class="note">Dataset <code>{html.escape(meta["dataset"])}</code>: {n_runs}, '
            f'{meta["records"]} records; generated {meta["generated"]}. Rates in percent with 95 % bootstrap '
            f"intervals over source identities; under each: rows (scored images), identities, seeds, targets."
            f'</p><nav><ul>{toc}<li><a href="#runs">Runs</a></li></ul></nav>{"".join(sec.html for sec in sections)}'
            f'<section id="runs"><h2>Runs</h2>{_runs_html(runs)}</section>'
            f'<script type="application/json" id="report-meta">{json.dumps(meta)}</script></body></html>')
    write_bytes_atomic(report.index_html, page)
    return report
