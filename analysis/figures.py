"""Figures of the report: Table II and V as plots with their intervals, and Fig. 5's curves.

matplotlib's object API (``Figure``) on the Agg canvas: no pyplot, no display, no global state.

Every figure is drawn from a :class:`~erasablemask.analysis.tables.Table`'s
cells or from the records, and returned as PNG bytes so the report can
both write it beside the HTML and embed it.

- :func:`rates_by_model`: Table II as bars (ASR, and ESR for schemes that
  erase) per black-box model, with the 95 % interval as error bars;
- :func:`rates_by_transform`: Table V as lines over the transforms, one
  panel per black-box model;
- :func:`sweep_points` / :func:`sweep_curves`: Fig. 5: black-box ASR, ESR
  and IDR against a swept config value (``protection.gamma``,
  ``protection.beta``), the other held at one value; the numbers and the plot.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from erasablemask.analysis.rates import estimate

__all__ = ["rates_by_model", "rates_by_transform", "sweep_points", "sweep_curves", "SWEEP_PARAMS"]

SWEEP_PARAMS = ("protection.gamma", "protection.beta")  # Fig. 5 (a-b): γ, (c): β
# Fig. 5's rates: the paper's ASR and ESR, and IDR (ESR alone sits at its 1 − FAR ceiling for any non-target face).
FIG5_RATES = ("asr", "esr", "idr")


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


def sweep_points(records: pd.DataFrame, runs: pd.DataFrame, param: str, *, n_boot: int = 500) -> pd.DataFrame:
    """Fig. 5's numbers: black-box ASR, ESR and IDR (no transform) per value of ``param`` and model, with intervals.

    The other Fig. 5 parameters are held at one value each (:func:`_held_fixed`, column ``held``).

    Args:
        records: annotated records (:func:`~erasablemask.analysis.tables.annotate`) of one data set.
        runs: the runs table (``params.<param>`` column).
        param: a dotted config key.

    Returns:
        Columns ``param, value, held, model, rate, estimate, lo, hi, n, n_identities`` (rates as fractions);
        empty when the runs do not take two or more values of ``param``.
    """
    columns = ["param", "value", "held", "model", "rate", "estimate", "lo", "hi", "n", "n_identities"]
    col = f"params.{param}"
    if col not in runs.columns:
        return pd.DataFrame(columns=columns)
    runs, held = _held_fixed(runs, param)
    value_of = runs.set_index("run")[col]
    prot = records[(records["kind"] == "protected") & (records["role"] == "black_box")
                   & (records["transform"] == "none") & (records["method"] == "erasablemask")]
    prot = prot.assign(x=pd.to_numeric(prot["run"].map(value_of), errors="coerce")).dropna(subset=["x"])
    if prot["x"].nunique() < 2:
        return pd.DataFrame(columns=columns)
    held_text = ", ".join(f"{k} = {v:g}" for k, v in held.items())
    rows = []
    for rate in FIG5_RATES:
        for model, sub in prot.groupby("model", sort=False):
            for x, at in sorted(sub.groupby("x")):
                e = estimate(at, rate, n_boot=n_boot)
                if e.value is not None:
                    rows.append(dict(param=param, value=float(x), held=held_text, model=model, rate=rate,
                                     estimate=e.value, lo=e.lo, hi=e.hi, n=e.n, n_identities=e.n_identities))
    return pd.DataFrame(rows, columns=columns)


def sweep_curves(points: pd.DataFrame) -> bytes | None:
    """Fig. 5: black-box ASR, ESR and IDR against the swept value, one line per model (:func:`sweep_points`' rows).

    Returns:
        PNG bytes, or None without points.
    """
    if points.empty:
        return None
    param, held = points["param"].iloc[0], points["held"].iloc[0]
    fig = Figure(figsize=(13, 3.4))
    axes = fig.subplots(1, len(FIG5_RATES), sharex=True)
    for ax, rate in zip(axes, FIG5_RATES):
        label = rate.upper()
        for j, (model, sub) in enumerate(points[points["rate"] == rate].groupby("model", sort=False)):
            sub = sub.sort_values("value")
            ys = sub["estimate"].to_numpy(float) * 100
            err = [ys - sub["lo"].to_numpy(float) * 100, sub["hi"].to_numpy(float) * 100 - ys]
            ax.errorbar(sub["value"], ys, yerr=err, fmt="-o", ms=3, capsize=2, color=f"C{j % 10}", label=model)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    at = f", {held}" if held else ""
    fig.suptitle(f"Fig. 5: black-box ASR, ESR and IDR against {param}{at}", fontsize=10)
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
