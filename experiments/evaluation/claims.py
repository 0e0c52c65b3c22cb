"""The paper's claims on records of several seeds: attack variants side by side, ESR beside its ceilings, IDR.

:func:`claims_rows` takes the per-sample records of one evaluation per
(attack method, seed) — the same world, targets, FR models and thresholds
for every method of one seed — and gives one row per (method, measure):
the mean over seeds of the per-seed rate with a 95 % interval that
resamples seeds, then source identities
(:func:`~erasablemask.experiments.evaluation.metrics.rate_across_seeds`),
and one row per paired comparison (e.g. meta-auxiliary minus ensemble
black-box ASR on the same seeds, targets and faces,
:func:`~erasablemask.experiments.evaluation.metrics.paired_difference`).

Measures (protected faces without transform unless said; black-box models
pooled, surrogates pooled):

- ``ASR``; ``ASR clean`` and ``ASR attr-only`` (baselines);
- ``ESR`` (Eq. 18 on the restored face) and, beside it, the same test on
  the clean, attribute-only, protected-unrestored and destroyed faces;
- ``IDR`` (restored face vs another photo of the source at FAR 0.01), its
  ceiling ``IDR clean`` and the destroyed control ``IDR destroyed``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from erasablemask.experiments.evaluation.metrics import paired_difference, rate_across_seeds

__all__ = ["MEASURES", "claims_rows", "format_claims"]

# (label, kind of row, rate): rate over the rows of that kind (transform 'none').
MEASURES: tuple[tuple[str, str, str], ...] = (
    ("ASR", "protected", "asr"),
    ("ASR clean", "clean", "asr"),
    ("ASR attr-only", "attr_only", "asr"),
    ("ESR", "protected", "esr"),
    ("ESR clean", "clean", "esr_unrestored"),
    ("ESR attr-only", "attr_only", "esr_unrestored"),
    ("ESR unrestored", "protected", "esr_unrestored"),
    ("ESR destroyed", "destroyed", "esr_unrestored"),
    ("IDR", "protected", "idr"),
    ("IDR clean", "clean", "idr_unrestored"),
    ("IDR destroyed", "destroyed", "idr_unrestored"),
)


def _select(records: pd.DataFrame, role: str, kind: str) -> pd.DataFrame:
    r = records
    return r[(r["role"] == role) & (r["kind"] == kind) & (r["transform"] == "none")]


def claims_rows(
    records: Mapping[str, pd.DataFrame],
    *,
    pairs: Sequence[tuple[str, str]] = (),
    roles: Sequence[str] = ("black_box", "surrogate"),
    n_boot: int = 2000,
) -> list[dict]:
    """Rows of the claims table.

    Args:
        records: method -> its records, every seed concatenated (column ``seed`` tells them apart).
        pairs: ``(a, b)`` method pairs whose paired difference ``a − b`` of ASR is reported.
        roles: FR-model roles to report (models of a role pooled).
        n_boot: bootstrap replicates.

    Returns:
        Dicts with ``method``, ``role``, ``measure``, ``value``, ``lo``, ``hi``, ``n_seeds``,
        ``n_identities``, ``n`` (rows); measures a method's records cannot give (no restorer,
        no identities) are left out.
    """
    rows = []
    for method, rec in records.items():
        for role in roles:
            for label, kind, rate in MEASURES:
                sel = _select(rec, role, kind)
                if sel.empty:
                    continue
                try:
                    est = rate_across_seeds(sel, rate, n_boot=n_boot)
                except ValueError:  # the rows lack that value (e.g. no identities): not a measure here
                    continue
                rows.append({"method": method, "role": role, "measure": label, **est})
    for a, b in pairs:
        for role in roles:
            d = paired_difference(
                _select(records[a], role, "protected"), _select(records[b], role, "protected"), "asr", n_boot=n_boot
            )
            rows.append({"method": f"{a} - {b}", "role": role, "measure": "ASR (paired)", **d})
    return rows


def format_claims(rows: Sequence[dict]) -> str:
    """The claims table as aligned text: rates in % with their 95 % intervals and counts."""
    lines = [
        f"{'method':34s} {'role':10s} {'measure':15s} {'value':>7s} {'95% interval':>17s} "
        f"{'seeds':>5s} {'ids':>4s} {'rows':>6s}"
    ]
    for r in rows:
        lines.append(
            f"{r['method']:34s} {r['role']:10s} {r['measure']:15s} {100 * r['value']:7.1f} "
            f"[{100 * r['lo']:6.1f},{100 * r['hi']:6.1f}] {r['n_seeds']:5d} {r['n_identities']:4d} "
            f"{r['n']:6d}"
        )
    return "\n".join(lines)
