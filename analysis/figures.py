"""Figures of the report: Table II and V as plots with their intervals, and Fig. 5's curves.

matplotlib's object API (``Figure``) on the Agg canvas: no pyplot, no display, no global state.

Every figure is drawn from a :class:`~erasablemask.analysis.tables.Table`'s
cells or from the records, and returned as PNG bytes so the report can
both write it beside the HTML and embed it.

- :func:`rates_by_model`: Table II as bars (ASR, and ESR for schemes that
  erase) per black-box model, with the 95 % interval as error bars;
- :func:`rates_by_transform`: Table V as lines over the transforms, one
  panel per black-box model;
- :func:`sweep_curves`: Fig. 5: black-box ASR and ESR against a swept
  config value (``protection.gamma``, ``protection.beta``).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from erasablemask.analysis.rates import estimate

__all__ = ["rates_by_model", "rates_by_transform", "sweep_curves", "SWEEP_PARAMS"]

SWEEP_PARAMS = ("protection.gamma", "protection.beta")  # Fig. 5 (a-b): γ, (c): β


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # Agg canvas: no display, no pyplot state
    return buf.getvalue()


def _err(sub: pd.DataFrame) -> np.ndarray:
    v, lo, hi = (sub[c].astype(float).to_numpy() for c in ("value", "lo", "hi"))
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]) * 100


def rates_by_model(cells: pd.DataFrame, title: str) -> bytes:
    """Bars per black-box model (x) and table row (colour); ASR above, ESR below where any row has it."""
    metrics = [m for m in ("ASR", "ESR") if cells.loc[cells["metric"] == m, "value"].notna().any()]
    models = list(dict.fromkeys(cells["column"]))
    rows = list(dict.fromkeys(cells["row"]))
    fig = Figure(figsize=(max(6.0, 1.6 * len(models) + 2), 3.2 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        rated = cells[(cells["metric"] == metric) & cells["value"].notna()]
        shown = [row for row in rows if (rated["row"] == row).any()]  # ESR: only the rows that erase
        width = 0.8 / max(1, len(shown))
        for k, row in enumerate(shown):
            sub = rated[rated["row"] == row]
            x = np.array([models.index(m) for m in sub["column"]], dtype=float) + (k - (len(shown) - 1) / 2) * width
            ax.bar(x, sub["value"].astype(float) * 100, width, yerr=_err(sub), capsize=2, label=row,
                   color=f"C{rows.index(row) % 10}")  # a row keeps its colour in both panels
        ax.set_xticks(range(len(models)), models, fontsize=8)
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(title, fontsize=10)
    handles = {h.get_label(): h for ax in axes[:, 0] for h in ax.get_legend_handles_labels()[0]}
    axes[0, 0].legend(list(handles.values()), list(handles), fontsize=7, loc="upper left",
                      bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def rates_by_transform(cells: pd.DataFrame, title: str) -> bytes:
    """One panel per black-box model: ASR (solid, dots) and ESR (dashed, squares) over the transforms, a line per row."""
    models = list(dict.fromkeys(cells["column"]))
    transforms = list(dict.fromkeys(cells["block"]))
    fig = Figure(figsize=(3.6 * len(models) + 1.5, 3.4))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)
    legend: dict[str, Line2D] = {}  # plain line handles: an errorbar's own handle hides the line style
    for ax, model in zip(axes[0], models):
        for j, row in enumerate(dict.fromkeys(cells["row"])):
            colour = f"C{j % 10}"
            for metric, style in (("ASR", "-o"), ("ESR", "--s")):
                sub = cells[(cells["column"] == model) & (cells["row"] == row) & (cells["metric"] == metric)
                            & cells["value"].notna()]
                if len(sub):
                    x = [transforms.index(t) for t in sub["block"]]
                    ax.errorbar(x, sub["value"].astype(float) * 100, yerr=_err(sub), fmt=style, ms=3,
                                color=colour, capsize=2)
                    legend[f"{row} {metric}"] = Line2D([], [], color=colour, linestyle=style[:-1], marker=style[-1],
                                                       ms=4)
        ax.set_xticks(range(len(transforms)), transforms, rotation=40, fontsize=7)
        ax.set_xlim(-0.5, len(transforms) - 0.5)
        ax.set_title(model, fontsize=9)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("rate (%)")
    fig.suptitle(title, fontsize=10)
    axes[0, -1].legend(list(legend.values()), list(legend), fontsize=7, handlelength=3, loc="upper left",
                       bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def sweep_curves(records: pd.DataFrame, runs: pd.DataFrame, param: str, *, n_boot: int = 500) -> bytes | None:
    """Fig. 5: black-box ASR and ESR (no transform) against ``param``'s value, one line per model.

    Args:
        records: annotated records (:func:`~erasablemask.analysis.tables.annotate`) of one data set.
        runs: the runs table (``params.<param>`` column).
        param: a dotted config key.

    Returns:
        PNG bytes, or None when the runs do not take two or more values of ``param``.
    """
    col = f"params.{param}"
    if col not in runs.columns:
        return None
    runs, held = _held_fixed(runs, param)
    value_of = runs.set_index("run")[col]
    prot = records[(records["kind"] == "protected") & (records["role"] == "black_box")
                   & (records["transform"] == "none") & (records["method"] == "erasablemask")]
    prot = prot.assign(x=pd.to_numeric(prot["run"].map(value_of), errors="coerce")).dropna(subset=["x"])
    if prot["x"].nunique() < 2:
        return None
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, rate, label in ((axes[0], "asr", "ASR"), (axes[1], "esr", "ESR")):
        for j, (model, sub) in enumerate(prot.groupby("model", sort=False)):
            pts = []
            for x, at in sorted(sub.groupby("x")):
                e = estimate(at, rate, n_boot=n_boot)
                if e.value is not None:
                    pts.append((x, e.value * 100, (e.value - e.lo) * 100, (e.hi - e.value) * 100))
            if pts:
                xs, ys, lo, hi = map(np.array, zip(*pts))
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="-o", ms=3, capsize=2, color=f"C{j % 10}", label=model)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    at = "".join(f", {k.split('.')[-1]} = {v:g}" for k, v in held.items())
    fig.suptitle(f"Fig. 5: black-box ASR and ESR against {param}{at}", fontsize=10)
    return _png(fig)


def _held_fixed(runs: pd.DataFrame, param: str) -> tuple[pd.DataFrame, dict[str, float]]:
    """The runs of ``param``'s curve: the other Fig. 5 parameters held at one value each (the paper varies one
    at a time, the other at its default).

    The value held is the one most runs share (ties: the middle of the tied values, e.g. β = 0.5 of a
    0.3/0.5/0.7 grid), so a γ × β grid gives the γ curve at β = 0.5 and the paper's two lines give each
    line at the other's default. Returns the kept runs and ``{other param: value held}``.
    """
    held = {}
    for other in SWEEP_PARAMS:
        col = f"params.{other}"
        if other == param or col not in runs.columns:
            continue
        values = pd.to_numeric(runs[col], errors="coerce")
        counts = values.value_counts()
        if len(counts) < 2:
            continue
        tied = sorted(counts[counts == counts.max()].index)
        held[other] = float(tied[(len(tied) - 1) // 2])
        runs = runs[values == held[other]]
    return runs, held
