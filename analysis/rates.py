"""Rates over records with 95 % bootstrap intervals over source identities, and the counts behind each.

Every rate is a share of rows (one scored image per row) for which a
comparison holds. The headline rates read the records' flag columns:

- ``asr``: ``attack_success`` (Eq. 17: cos to the target > τ1);
- ``esr``: ``erasion_success`` (Eq. 18, literal: restored face's cos to the target < τ2);
- ``idr``: ``identity_restored`` (restored face verified as the source at FAR 0.01).

The ceilings compare a cosine with a threshold directly (in float32, as
the flags were computed), on whichever rows are selected:

- ``esr_unrestored``: Eq. 18 on the scored image itself (``cos_target < tau2``):
  on protected rows, the ESR a trusted authority gets without the restorer;
  on ``clean`` / ``attr_only`` rows, the ESR a perfect restorer would reach;
- ``idr_unrestored``: ``cos_source > thr_far_0p01``: on clean rows, the
  identity-restoration ceiling (the source face itself).

A rate exists only when every selected row has its value (a scheme that
cannot erase has no ``esr``): :func:`estimate` then returns ``value=None``,
never a rate over a subset.

Intervals (DESIGN.md "Decisions"): percentile bootstrap, resampling source
identities with replacement (a cluster bootstrap: an identity's rows stay
together, since photos of one person are not independent); rows whose
identity is unknown each count as their own cluster. Identities are
grouped by ``source_identity`` alone: pooled seeds of a synthetic world
share identity numbers, which only widens the interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["RATES", "MEANS", "RateDef", "Estimate", "successes", "estimate", "mean_estimate", "bootstrap_interval"]


@dataclass(frozen=True)
class RateDef:
    """How one rate reads a row: a flag column, or ``cos`` compared with ``tau`` (``above``: ``cos > tau``)."""

    name: str
    label: str
    flag: str | None
    cos: str
    tau: str
    above: bool


RATES: dict[str, RateDef] = {r.name: r for r in (
    RateDef("asr", "ASR", "attack_success", "cos_target", "tau1", True),  # Eq. 17
    RateDef("esr", "ESR", "erasion_success", "cos_restored_target", "tau2", False),  # Eq. 18
    RateDef("idr", "IDR", "identity_restored", "cos_restored_source", "thr_far_0p01", True),
    RateDef("esr_unrestored", "ESR without restorer", None, "cos_target", "tau2", False),  # Eq. 18 on the image
    RateDef("idr_unrestored", "IDR without restorer", None, "cos_source", "thr_far_0p01", True),
    # commercial services (Table III): the service's confidence above its own threshold at a FAR
    *(RateDef(f"api_asr_{far}", f"ASR at the service's FAR {far}", None, "api_confidence",
              f"api_thr_far_{col}", True) for far, col in (("1e-3", "0p001"), ("1e-4", "0p0001"), ("1e-5", "0p00001"))),
)}
# Means of a score column with the same interval (a commercial service's confidence, Table III).
MEANS: dict[str, str] = {"api_confidence": "api_confidence", "api_confidence_restored": "api_confidence_restored"}


def successes(rows: pd.DataFrame, rate: str) -> np.ndarray:
    """Per row, 1.0 where ``rate``'s condition holds, 0.0 where not, NaN where the row has no value.

    Args:
        rows: records (any selection).
        rate: a key of :data:`RATES`.
    """
    spec = RATES[rate]
    if spec.flag is not None:
        return rows[spec.flag].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    c = rows[spec.cos].to_numpy(dtype=np.float32, na_value=np.nan)
    t = rows[spec.tau].to_numpy(dtype=np.float32, na_value=np.nan)
    hit = (c > t) if spec.above else (c < t)
    return np.where(np.isnan(c) | np.isnan(t), np.nan, hit.astype(np.float64))


@dataclass(frozen=True)
class Estimate:
    """One cell: a rate in [0, 1] (None: not every row has it), its 95 % interval and what it rests on."""

    value: float | None
    lo: float | None
    hi: float | None
    n: int  # rows (scored images)
    n_identities: int
    n_seeds: int
    n_targets: int
    n_runs: int
    runs: tuple[str, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def _clusters(rows: pd.DataFrame) -> np.ndarray:
    """Cluster label per row: its source identity, or a label of its own when the identity is unknown."""
    ident = rows["source_identity"]
    known = ident.notna().to_numpy()
    labels = np.empty(len(rows), dtype=object)
    labels[known] = [f"id:{v}" for v in ident[known]]
    labels[~known] = [f"row:{i}" for i in range(int((~known).sum()))]
    return labels


def bootstrap_interval(hits: np.ndarray, clusters: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the share of ``hits`` when whole clusters are resampled with replacement.

    Args:
        hits: (N,) 0/1 per row.
        clusters: (N,) cluster label per row (source identity).
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: the resampling's seed (the same rows give the same interval).

    Returns:
        ``(lo, hi)`` in [0, 1].
    """
    _, inverse = np.unique(clusters.astype(str), return_inverse=True)
    k = int(inverse.max()) + 1
    sums = np.bincount(inverse, weights=hits, minlength=k)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, k, size=(n_boot, k))
    shares = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(shares, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _counts(rows: pd.DataFrame) -> dict:
    """What a cell rests on: rows, identities, seeds, targets and runs."""
    return dict(
        n=len(rows),
        n_identities=int(rows["source_identity"].nunique()),
        n_seeds=int(rows["seed"].nunique()),
        n_targets=int(rows["target"].nunique()),
        n_runs=int(rows["run"].nunique()),
        runs=tuple(sorted(rows["run"].unique())),
    )


def estimate(rows: pd.DataFrame, rate: str, *, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """``rate`` over ``rows`` with its bootstrap interval and counts.

    Args:
        rows: the records of one cell (one method, model, transform and kind).
        rate: a key of :data:`RATES`.
        n_boot: bootstrap replicates (0: no interval).
        seed: the bootstrap's seed.

    Raises:
        KeyError: an unknown rate (names the known ones).
    """
    if rate not in RATES:
        raise KeyError(f"unknown rate {rate!r}; choose from {sorted(RATES)}")
    counts = _counts(rows)
    hits = successes(rows, rate)
    if len(rows) == 0 or np.isnan(hits).any():
        return Estimate(None, None, None, **counts)
    value = float(hits.mean())
    lo, hi = bootstrap_interval(hits, _clusters(rows), n_boot=n_boot, seed=seed) if n_boot else (None, None)
    return Estimate(value, lo, hi, **counts)


def mean_estimate(rows: pd.DataFrame, column: str, *, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The mean of a score ``column`` over ``rows`` with the same identity-bootstrap interval as the rates.

    The bootstrap resamples source identities and takes the pooled mean (:func:`bootstrap_interval` works on
    any values, not only 0/1). ``value`` is None unless every row has the column (as for :func:`estimate`).

    Args:
        rows: the records of one cell (one method, service and kind).
        column: a key of :data:`MEANS` (``api_confidence``: a commercial service's confidence in [0, 100]).
    """
    if column not in MEANS:
        raise KeyError(f"unknown mean {column!r}; choose from {sorted(MEANS)}")
    values = rows[MEANS[column]].to_numpy(dtype=np.float64, na_value=np.nan)
    counts = _counts(rows)
    if len(rows) == 0 or np.isnan(values).any():
        return Estimate(None, None, None, **counts)
    lo, hi = bootstrap_interval(values, _clusters(rows), n_boot=n_boot, seed=seed) if n_boot else (None, None)
    return Estimate(float(values.mean()), lo, hi, **counts)
