"""Render a :class:`~erasablemask.analysis.tables.Table` as text: printed cells, Markdown, HTML.

A printed rate cell reads ``64.0 [58.1, 70.2]`` (percent, 95 % interval),
then what it rests on, ``n 450 · 45 id · 2 seeds · 4 tgt``, then, where the
setting matches, ``paper 64.00``. A rate the rows cannot give (ESR of a
scheme that cannot erase) prints ``–``, as in the paper.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from erasablemask.analysis.tables import Table

__all__ = ["cell_text", "display_frame", "to_markdown", "to_html"]

DASH = "–"


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def cell_text(cell: pd.Series, percent: bool = True) -> tuple[str, str, str]:
    """``(value, counts, paper)`` strings of one cell (empty strings where there is nothing to say)."""
    if _missing(cell["value"]):
        value = DASH
    elif percent:
        value = f"{cell['value'] * 100:.1f}"
        if not _missing(cell["lo"]):
            value += f" [{cell['lo'] * 100:.1f}, {cell['hi'] * 100:.1f}]"
    else:
        value = f"{cell['value']:.4g}"
    parts = []
    if not _missing(cell.get("n")):
        parts.append(f"n {int(cell['n'])}")
    if not _missing(cell.get("n_identities")):
        parts.append(f"{int(cell['n_identities'])} id")
    if not _missing(cell.get("n_seeds")):
        parts.append(f"{int(cell['n_seeds'])} seed{'s' if int(cell['n_seeds']) != 1 else ''}")
    if not _missing(cell.get("n_targets")):
        parts.append(f"{int(cell['n_targets'])} tgt")
    if not _missing(cell.get("n_runs")) and (len(parts) < 4 or int(cell["n_runs"]) > 1):
        parts.append(f"{int(cell['n_runs'])} run{'s' if int(cell['n_runs']) != 1 else ''}")
    paper = ""
    if not _missing(cell.get("paper")):
        paper = f"paper {cell['paper'] * 100:.2f}" if percent else f"paper {cell['paper']:.4g}"
    return value, " · ".join(parts), paper


def _column_keys(table: Table) -> list[tuple]:
    """Printed columns grouped by their first key (a model's ASR beside its ESR), each level in first-seen order."""
    present = set(table.cells[list(table.columns)].itertuples(index=False, name=None))
    levels = [list(dict.fromkeys(table.cells[c])) for c in table.columns]
    keys: list[tuple] = [()]
    for level in levels:
        keys = [(*k, v) for k in keys for v in level]
    return [k for k in keys if k in present]


def display_frame(table: Table, sep: str = "; ") -> pd.DataFrame:
    """The table as printed: one row per ``table.index`` value, one column per ``table.columns`` value, strings."""
    cells = table.cells
    col_keys = _column_keys(table)
    row_keys = list(dict.fromkeys(cells[list(table.index)].itertuples(index=False, name=None)))
    text = {}
    for _, cell in cells.iterrows():
        parts = [p for p in cell_text(cell, table.percent) if p]
        text[(tuple(cell[list(table.index)]), tuple(cell[list(table.columns)]))] = sep.join(parts)
    data = [[text.get((r, c), "") for c in col_keys] for r in row_keys]
    frame = pd.DataFrame(data, columns=[" ".join(map(str, c)) for c in col_keys])
    frame.insert(0, " / ".join(table.index), [" · ".join(map(str, r)) for r in row_keys])
    return frame


def pipe_table(head: list[object], rows: list[list[object]]) -> list[str]:
    """The lines of a GitHub pipe table (``|`` in cells escaped)."""
    esc = [[str(v).replace("|", "\\|") for v in row] for row in [head, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(esc[0])] + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def to_markdown(table: Table) -> str:
    """A GitHub pipe table with the title, the notes and the runs it was built from."""
    lines = [f"## {table.title}", ""]
    if table.missing:
        return "\n".join([*lines, f"Not built: {table.missing}", ""])
    frame = display_frame(table)
    lines += pipe_table(list(frame.columns), frame.to_numpy().tolist())
    lines += ["", *[f"- {n}" for n in table.notes], f"- Built from runs: {', '.join(table.runs)}", ""]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    """An HTML ``<table>`` (two header rows when the columns are (model, metric)), cells in three lines."""
    cells = table.cells
    col_keys = _column_keys(table)
    row_keys = list(dict.fromkeys(cells[list(table.index)].itertuples(index=False, name=None)))
    by_key = {(tuple(c[list(table.index)]), tuple(c[list(table.columns)])): c for _, c in cells.iterrows()}
    e = html.escape
    head = ['<table class="results">', "<thead>"]
    if len(table.columns) == 2:
        tops = list(dict.fromkeys(k[0] for k in col_keys))
        head.append(f'<tr><th rowspan="2">{e(" / ".join(table.index))}</th>' + "".join(
            f'<th colspan="{sum(1 for k in col_keys if k[0] == t)}">{e(str(t))}</th>' for t in tops) + "</tr>")
        head.append("<tr>" + "".join(f"<th>{e(str(k[1]))}</th>" for k in col_keys) + "</tr>")
    else:
        head.append(f"<tr><th>{e(' / '.join(table.index))}</th>" + "".join(
            f"<th>{e(' '.join(map(str, k)))}</th>" for k in col_keys) + "</tr>")
    body = ["</thead>", "<tbody>"]
    for r in row_keys:
        tds = []
        for c in col_keys:
            cell = by_key.get((r, c))
            if cell is None:
                tds.append("<td></td>")
                continue
            value, counts, paper = cell_text(cell, table.percent)
            tds.append(f'<td><span class="v">{e(value)}</span><br><span class="c">{e(counts)}</span>'
                       + (f'<br><span class="p" title="{e(str(cell["paper_source"]))}">{e(paper)}</span>'
                          if paper else "") + "</td>")
        body.append(f"<tr><th>{e(' · '.join(str(v) for v in r if str(v) != ''))}</th>{''.join(tds)}</tr>")
    return "\n".join([*head, *body, "</tbody>", "</table>"])
