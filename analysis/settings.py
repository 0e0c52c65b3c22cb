"""What each collected run was: its data set, its config variant, and whether it matches a setting of the paper.

Tables pool the runs of one method and data set. When those runs' configs
differ in more than the seed (a sweep over γ, an ablation of
``attack.method``), pooling them would mix settings, so each row of a
table is a *variant*: the method plus the config values that tell its runs
apart (``erasablemask (protection.gamma=0.1)``). Params that never change
what is measured (the seed, ``compute.*``, ``tracking.*``) do not make a
variant; runs of different seeds pool, and the ``n seeds`` count says so.

The paper's published values stand beside ours only where the setting
matches: the same data set (CelebA-HQ or FFHQ, ``data.kind``) and the same
FR model (the paper's zoo names). The mini-world never matches.
"""

from __future__ import annotations

import pandas as pd

from erasablemask.analysis.paper_values import PAPER_DATASETS, PAPER_MODELS

__all__ = ["IGNORED_PARAMS", "run_datasets", "variant_labels", "differing_params", "setting_note"]

# Params that do not change what a run measures (prefixes end with '.').
IGNORED_PARAMS = ("seed", "compute.", "tracking.")


def _ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED_PARAMS)


def _params(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs' params (``params.<key>`` columns) indexed by run, without the ignored ones."""
    cols = [c for c in runs.columns if c.startswith("params.") and not _ignored(c[len("params."):])]
    return runs.set_index("run")[cols].rename(columns=lambda c: c[len("params."):])


def run_datasets(runs: pd.DataFrame, run_ids: list[str]) -> dict[str, str]:
    """Run -> its data set (``data.kind`` param, else the ``dataset`` tag, else ``"unknown"``)."""
    out = {}
    indexed = runs.set_index("run") if len(runs) else pd.DataFrame()
    for run in run_ids:
        value = None
        for col in ("params.data.kind", "tags.dataset"):
            if run in indexed.index and col in indexed.columns and pd.notna(indexed.at[run, col]):
                value = str(indexed.at[run, col])
                break
        out[run] = value or "unknown"
    return out


def differing_params(runs: pd.DataFrame, run_ids: list[str]) -> list[str]:
    """The params (ignored ones aside) whose values differ among ``run_ids`` (a missing param is a value)."""
    params = _params(runs)
    sub = params.loc[[r for r in run_ids if r in params.index]]
    if len(sub) < 2:
        return []
    return sorted(c for c in sub.columns if sub[c].astype("string").fillna("<unset>").nunique() > 1)


def variant_labels(runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A row label per (run, method): the method, plus the params that tell its runs apart within a data set.

    Args:
        runs: the dataset's runs table.
        pairs: the (run, method) pairs present in the records.

    Returns:
        ``{(run, method): "method"}`` or ``"method (key=value, ...)"``.
    """
    params = _params(runs)
    datasets = run_datasets(runs, sorted({r for r, _ in pairs}))
    labels: dict[tuple[str, str], str] = {}
    groups: dict[tuple[str, str], list[str]] = {}
    for run, method in pairs:
        groups.setdefault((method, datasets[run]), []).append(run)
    for (method, _), run_ids in groups.items():
        keys = differing_params(runs, run_ids)
        for run in run_ids:
            if keys and run in params.index:
                values = ", ".join(f"{k}={params.at[run, k]}" for k in keys)
                labels[(run, method)] = f"{method} ({values})"
            else:
                labels[(run, method)] = method
    return labels


def setting_note(dataset: str, models: list[str] | None) -> str | None:
    """None when ``dataset`` and some of ``models`` (None: models do not matter) are the paper's; else the line
    that says why not."""
    if dataset not in PAPER_DATASETS.values():
        what = "the synthetic mini-world" if dataset == "miniworld" else f"data set '{dataset}'"
        return (f"Setting does not match the paper's ({what}; the paper uses CelebA-HQ and FFHQ with its six FR "
                f"models): the published values are not put beside these numbers.")
    if models is not None and not set(models) & set(PAPER_MODELS.values()):
        return (f"Setting does not match the paper's: FR models {sorted(models)} are not among the paper's "
                f"{sorted(PAPER_MODELS.values())}; the published values are not put beside these numbers.")
    return None
