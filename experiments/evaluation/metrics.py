"""Protection and erasion metrics (paper Eq. 17-18) over per-sample records, and the checks the paper leaves out.

All FR embeddings are L2-normalised (``FaceRecognizer`` returns them so), so
the cosine similarity is a dot product (:func:`cosine`). Thresholds are
cosine thresholds read off a model's impostor distribution at a FAR. The
rates are computed from the rows of
:mod:`~erasablemask.experiments.evaluation.records` (one per scored image,
FR model and transform); select the rows first (one model, one transform,
one ``kind``), then call one function:

- :func:`attack_success_rate` (Eq. 17): share of rows whose similarity to
  the target's (evaluation) photo is *above* τ1, the threshold at FAR
  ``evaluation.asr_far`` (0.01; NOTES.md: "0.01 times the FAR" is the
  field's FAR-0.01 threshold);
- :func:`erasion_success_rate` (Eq. 18, literal): share of restored faces
  whose similarity to the target is *below* τ2, the threshold at FAR
  ``evaluation.esr_far`` (0.1). It does not ask whether the restored face is
  the source person again;
- :func:`identity_restoration_rate` (ours, NOTES.md): share of restored
  faces verified as the source against *another* photo of the source, at the
  FAR-0.01 threshold.

Each takes the similarity and threshold columns as arguments, so the same
function gives the baselines (ASR of ``kind == "clean"`` rows), ESR without
the restorer (``cos="cos_target"``), the identity ceiling of clean faces
(``cos="cos_source"``) or a rate at another FAR (``tau="thr_far_0p001"``).
:func:`summary_metrics` turns an evaluation's rows into the string-keyed
summary that MLflow and the CLI show. :func:`attribute_accuracy` judges
attribute edits.

ESR's ceilings and controls. Eq. 18 read literally is passed by any face
that is not the target: a clean or attribute-only face scores about
1 − FAR(τ2) ≈ 90 %, and so does a destroyed face. So every ESR comes with
the same test on the clean faces (``esr_clean``), the attribute-only faces
(``esr_attr_only``), the protected faces without restoration
(``esr_unrestored``) and a destroyed control (``esr_destroyed``: a heavy
blur of the protected face, :func:`destroy`); IDR comes with its ceiling
(``idr_clean``: clean face vs another photo of the source) and the
destroyed control's (``idr_destroyed``). A restorer is doing its job when
ESR is near ``esr_clean`` AND IDR near ``idr_clean``, far above
``idr_destroyed``.

Intervals: every rate in the summary has a 95 % percentile bootstrap
interval resampling SOURCE IDENTITIES (a person's images are correlated):
:func:`identity_bootstrap_interval`. ``analysis/rates.py`` has the same
algorithm (same resampling, same seed, same numbers); two copies exist
because the layers forbid the import either way (analysis reads records
only and imports no experiments code; experiments never import analysis),
and ``tests/experiments/test_metrics_intervals.py`` checks that they agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IDR_FAR", "DESTROY_SIGMA", "cosine", "destroy", "attack_success_rate", "erasion_success_rate",
    "identity_restoration_rate", "success_flags", "identity_bootstrap_interval", "seed_identity_bootstrap",
    "rate_across_seeds", "paired_difference", "summary_metrics", "attribute_accuracy",
]

IDR_FAR = 0.01  # identity restoration: verified as the source at the FAR-0.01 threshold (column thr_far_0p01)
FAR_COLUMN_IDR = "thr_far_0p01"
DESTROY_SIGMA = 1 / 16  # the destroyed control's Gaussian blur σ, as a fraction of the image side (4 px at 64 px)


def destroy(x: Tensor, sigma: float = DESTROY_SIGMA) -> Tensor:
    """The destroyed control: a heavy Gaussian blur (σ = ``sigma`` × side, reflected borders) of ``x``.

    Args:
        x: ``(N, 3, H, W)`` in [-1, 1].
        sigma: blur σ as a fraction of the image side.

    Returns:
        The blurred images, same shape, in [-1, 1]: faces no FR model should
        verify as anyone, so a rate that such faces pass (literal ESR) says
        nothing about restoration.
    """
    if x.ndim != 4:
        raise ValueError(f"destroy needs (N, C, H, W) images; got {tuple(x.shape)}")
    s = max(float(sigma) * x.shape[-1], 0.5)
    radius = min(int(3 * s), x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / s) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k, groups=x.shape[1])
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.transpose(-1, -2), groups=x.shape[1])
    return y.clamp(-1, 1)


def identity_bootstrap_interval(hits: np.ndarray, clusters: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                                seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the share of ``hits`` when whole source identities are resampled with replacement.

    The algorithm of ``analysis/rates.py``'s ``bootstrap_interval`` (module
    docstring: why two copies): replicate ``b`` draws ``k`` of the ``k``
    clusters with replacement and takes the share of hits over their rows.

    Args:
        hits: ``(N,)`` 0/1 per row.
        clusters: ``(N,)`` cluster label per row (source identity; a unique label where unknown).
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: the resampling's seed (the same rows give the same interval).

    Returns:
        ``(lo, hi)`` in [0, 1].
    """
    hits = np.asarray(hits, dtype=np.float64)
    if hits.size == 0 or hits.shape != np.shape(clusters):
        raise ValueError(f"hits {hits.shape} and clusters {np.shape(clusters)} must be non-empty and of one shape")
    _, inverse = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    k = int(inverse.max()) + 1
    sums = np.bincount(inverse, weights=hits, minlength=k)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, k, size=(n_boot, k))
    shares = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(shares, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def seed_identity_bootstrap(values: np.ndarray, seeds: np.ndarray, clusters: np.ndarray, *, n_boot: int = 2000,
                            level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of the per-seed mean of ``values``, with a two-level percentile bootstrap interval.

    Each replicate draws the seeds with replacement, then within each drawn
    seed its source identities with replacement (a seed is a new world and
    training run; a person's images are correlated), and takes the mean over
    the drawn seeds of each one's mean over its drawn rows. With one seed it
    is the identity bootstrap. ``values`` are 0/1 hits (a rate) or paired
    differences of hits (:func:`paired_difference`).

    Returns:
        ``(estimate, lo, hi)``.
    """
    values = np.asarray(values, dtype=np.float64)
    seeds, clusters = np.asarray(seeds), np.asarray(clusters).astype(str)
    if values.size == 0 or not (values.shape == seeds.shape == clusters.shape):
        raise ValueError(f"values {values.shape}, seeds {seeds.shape} and clusters {clusters.shape} must be "
                         f"non-empty and of one shape")
    rng = np.random.default_rng(seed)
    per_seed = []  # (sums, counts) per identity, for each seed
    for s in np.unique(seeds):
        sel = seeds == s
        _, inv = np.unique(clusters[sel], return_inverse=True)
        per_seed.append((np.bincount(inv, weights=values[sel]), np.bincount(inv).astype(np.float64)))
    estimate = float(np.mean([sums.sum() / counts.sum() for sums, counts in per_seed]))
    k = len(per_seed)
    shares = np.empty(n_boot)
    seed_draw = rng.integers(0, k, size=(n_boot, k))
    inner = [rng.integers(0, len(sums), size=(n_boot, len(sums))) for sums, _ in per_seed]
    per_seed_share = np.stack([sums[d].sum(1) / counts[d].sum(1) for (sums, counts), d in zip(per_seed, inner)], 1)
    shares[:] = np.take_along_axis(per_seed_share, seed_draw, axis=1).mean(1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(shares, [alpha, 1.0 - alpha])
    return estimate, float(lo), float(hi)


_RATE_COLUMNS = {  # rate -> (cosine column, threshold column, success when above)
    "asr": ("cos_target", "tau1", True), "esr": ("cos_restored_target", "tau2", False),
    "idr": ("cos_restored_source", "thr_far_0p01", True), "esr_unrestored": ("cos_target", "tau2", False),
    "idr_unrestored": ("cos_source", "thr_far_0p01", True),
}


def rate_across_seeds(rows: pd.DataFrame, rate: str, **bootstrap) -> dict[str, float]:
    """``rate`` (asr, esr, idr, esr_unrestored, idr_unrestored) over rows of several seeds: mean of the per-seed
    rates, its :func:`seed_identity_bootstrap` interval and the counts (seeds, identities, rows).

    Select the rows first (one method, model or role, transform and ``kind``); a
    ceiling is the same rate on other kinds (``esr_unrestored`` on ``clean``
    rows: ESR's ceiling; ``idr_unrestored`` on ``clean`` rows: IDR's).
    """
    if rate not in _RATE_COLUMNS:
        raise ValueError(f"unknown rate {rate!r}; choose from {sorted(_RATE_COLUMNS)}")
    cos, tau, above = _RATE_COLUMNS[rate]
    _rate(rows, cos, tau, above, rate)  # refuses empty selections and missing values, naming them
    est, lo, hi = seed_identity_bootstrap(_hits(rows, cos, tau, above), rows["seed"].to_numpy(), _clusters(rows),
                                          **bootstrap)
    return {"value": est, "lo": lo, "hi": hi, "n_seeds": int(rows["seed"].nunique()),
            "n_identities": int(rows["source_identity"].nunique()), "n": len(rows)}


PAIR_KEYS = ("seed", "target", "sample", "model", "transform", "kind")


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, rate: str, **bootstrap) -> dict[str, float]:
    """``rate(a) − rate(b)`` on the same seeds, targets, images, models, transforms and kinds, with its interval.

    The rows of ``a`` and ``b`` (e.g. meta-auxiliary and ensemble runs) are
    matched on :data:`PAIR_KEYS`; the per-row difference of hits is
    bootstrapped over seeds, then source identities
    (:func:`seed_identity_bootstrap`), so what both methods share (the
    world, the faces, the target) cancels.

    Raises:
        ValueError: rows that do not pair one to one (names the counts).
    """
    if rate not in _RATE_COLUMNS:
        raise ValueError(f"unknown rate {rate!r}; choose from {sorted(_RATE_COLUMNS)}")
    cos, tau, above = _RATE_COLUMNS[rate]
    _rate(a, cos, tau, above, rate)
    _rate(b, cos, tau, above, rate)
    keys = list(PAIR_KEYS)
    left = a[keys + ["source_identity"]].assign(hit=_hits(a, cos, tau, above))
    right = b[keys].assign(hit=_hits(b, cos, tau, above))
    merged = left.merge(right, on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(a) or len(merged) != len(b) or len(merged) == 0:
        raise ValueError(f"paired_difference: {len(a)} and {len(b)} rows pair into {len(merged)}; select the same "
                         f"seeds, targets, images, models, transforms and kinds on both sides")
    diff = merged["hit_a"].to_numpy() - merged["hit_b"].to_numpy()
    est, lo, hi = seed_identity_bootstrap(diff, merged["seed"].to_numpy(), _clusters(merged), **bootstrap)
    return {"value": est, "lo": lo, "hi": hi, "n_seeds": int(merged["seed"].nunique()),
            "n_identities": int(merged["source_identity"].nunique()), "n": len(merged)}


def _clusters(rows: pd.DataFrame) -> np.ndarray:
    """Cluster label per row: its source identity, or a label of its own when unknown (as analysis/rates.py)."""
    ident = rows["source_identity"]
    known = ident.notna().to_numpy()
    labels = np.empty(len(rows), dtype=object)
    labels[known] = [f"id:{v}" for v in ident[known]]
    labels[~known] = [f"row:{i}" for i in range(int((~known).sum()))]
    return labels


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of L2-normalised embeddings.

    Args:
        a: (N, D) unit-norm embeddings.
        b: (N, D) or (1, D) unit-norm embeddings (broadcast).

    Returns:
        (N,) similarities in [-1, 1].
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"embeddings must be (N, D) and (N or 1, D); got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a * b).sum(dim=1)


def _compare(rows: pd.DataFrame, cos: str, tau: str, above: bool) -> np.ndarray:
    """Element-wise ``cos > tau`` (``above``) or ``cos < tau``, in float32; NaN compares False."""
    c = rows[cos].to_numpy(dtype=np.float32, na_value=np.nan)
    t = rows[tau].to_numpy(dtype=np.float32, na_value=np.nan)
    return c > t if above else c < t


def _rate(rows: pd.DataFrame, cos: str, tau: str, above: bool, what: str) -> float:
    if len(rows) == 0:
        raise ValueError(f"{what}: no rows; select the rows of one model and transform that exist in the records")
    for column in (cos, tau):
        if column not in rows.columns:
            raise ValueError(f"{what}: records have no column '{column}'")
        missing = int(rows[column].isna().sum())
        if missing:
            raise ValueError(f"{what}: {missing} of {len(rows)} rows have no '{column}' (a scheme that cannot "
                             f"erase, unknown identities or an uncalibrated threshold); select rows that have it")
    return float(_compare(rows, cos, tau, above).mean())


def attack_success_rate(rows: pd.DataFrame, *, cos: str = "cos_target", tau: str = "tau1") -> float:
    r"""Attack success rate, Eq. 17, over ``rows``:

    .. math:: ASR = \frac{1}{N} \sum_{i=1}^{N} 1\left(\cos[FR(x_{adv}), FR(x_{target})] > \tau_1\right)

    Args:
        rows: records of one model and transform (any ``kind``: the baselines' ASR is the same function).
        cos: the similarity column (default: to the target's evaluation photo).
        tau: the threshold column (default ``tau1``, at ``evaluation.asr_far``).

    Returns:
        The share of rows with ``cos > tau`` (strictly), in [0, 1].

    Raises:
        ValueError: no rows, or a row without a value in ``cos`` or ``tau``.
    """
    return _rate(rows, cos, tau, True, "attack success rate")


def erasion_success_rate(rows: pd.DataFrame, *, cos: str = "cos_restored_target", tau: str = "tau2") -> float:
    r"""Erasion success rate, Eq. 18 (literal), over ``rows``:

    .. math:: ESR = \frac{1}{N} \sum_{i=1}^{N} 1\left(\cos[FR(x_{rec}), FR(x_{target})] < \tau_2\right)

    Args:
        rows: records of one model and transform of a scheme that can erase.
        cos: the similarity column (default: restored face to the target's evaluation photo;
            ``"cos_target"`` gives Eq. 18 on the protected face itself, without the restorer).
        tau: the threshold column (default ``tau2``, at ``evaluation.esr_far``).

    Returns:
        The share of rows with ``cos < tau`` (strictly), in [0, 1].

    Raises:
        ValueError: no rows, or a row without a restored face (the scheme cannot erase).
    """
    return _rate(rows, cos, tau, False, "erasion success rate")


def identity_restoration_rate(rows: pd.DataFrame, *, cos: str = "cos_restored_source",
                              tau: str = "thr_far_0p01") -> float:
    r"""Identity-restoration rate (ours, NOTES.md), over ``rows``:

    .. math:: IDR = \frac{1}{N} \sum_{i=1}^{N} 1\left(\cos[FR(x_{rec}), FR(x_{source}')] > \tau_{0.01}\right)

    with :math:`x_{source}'` another photo of the source identity and
    :math:`\tau_{0.01}` the threshold at FAR 0.01.

    Args:
        rows: records of one model and transform of a scheme that can erase, identities known.
        cos: the similarity column (``"cos_source"`` on ``kind == "clean"`` rows gives the ceiling).
        tau: the threshold column.

    Returns:
        The share of rows with ``cos > tau`` (strictly), in [0, 1].
    """
    return _rate(rows, cos, tau, True, "identity-restoration rate")


def success_flags(rows: pd.DataFrame) -> dict[str, pd.arrays.BooleanArray]:
    """The records' flag columns (``attack_success``, ``erasion_success``, ``identity_restored``) from their cosines.

    The same comparisons as the three rates; a flag is null where its cosine or threshold is.
    """
    flags = {}
    for name, cos, tau, above in (("attack_success", "cos_target", "tau1", True),
                                  ("erasion_success", "cos_restored_target", "tau2", False),
                                  ("identity_restored", "cos_restored_source", "thr_far_0p01", True)):
        null = (rows[cos].isna() | rows[tau].isna()).to_numpy()
        flags[name] = pd.arrays.BooleanArray(_compare(rows, cos, tau, above), null)
    return flags


def _hits(rows: pd.DataFrame, cos: str, tau: str, above: bool) -> np.ndarray:
    return _compare(rows, cos, tau, above).astype(np.float64)


def summary_metrics(records: pd.DataFrame, prefix: str = "", *, intervals: bool = True,
                    n_boot: int = 2000) -> dict[str, float]:
    """The string-keyed summary of one evaluation's records (what MLflow and the CLI's table show).

    Per model ``m`` (in the order the rows name them): ``asr_clean/m``,
    ``esr_clean/m``, ``asr_attr_only/m`` and ``esr_attr_only/m`` (schemes
    that edit attributes), ``esr_destroyed/m`` and ``idr_destroyed/m`` (the
    destroyed control's rows), ``target_pair_cos/m`` and
    ``target_pair_verified/m`` (over the model's distinct targets),
    ``idr_clean/m`` (identities known: IDR's ceiling); per protected
    transform ``t`` (suffix ``@t``, none for ``"none"``): ``asr``, ``esr``
    (schemes that erase), ``esr_unrestored``, ``idr`` (erase + identities),
    ``cos`` (mean cosine to the target). Then ``<key>/surrogates_mean`` and
    ``<key>/black_box_mean``: each key's mean over the models of that role.
    With ``intervals``, every rate key ``<rate>[@t]/<m or group>`` also has
    ``<rate>_lo[@t]/…`` and ``<rate>_hi[@t]/…``, its 95 % identity-bootstrap interval
    (a group's from the pooled rows of its models, resampling identities),
    and ``n_images`` / ``n_identities`` give the source images and
    identities every rate rests on (per model and transform).

    Args:
        records: the rows of one evaluation (one ``method``).
        prefix: prepended to every key (``"val/"`` for per-epoch validation).
        intervals: add the bootstrap intervals.
        n_boot: bootstrap replicates.
    """
    out: dict[str, float] = {}
    cells: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # rate key -> (hits, identity clusters)
    roles: dict[str, list[str]] = {"surrogate": [], "black_box": []}

    def rate(key: str, rows: pd.DataFrame, cos: str, tau: str, above: bool, fn) -> None:
        out[key] = fn(rows, cos=cos, tau=tau)
        cells[key] = (_hits(rows, cos, tau, above), _clusters(rows))

    asr, esr, idr = attack_success_rate, erasion_success_rate, identity_restoration_rate
    for m, rows in records.groupby("model", sort=False):
        roles[str(rows["role"].iloc[0])].append(m)
        kind = rows["kind"]
        clean, attr, protected = rows[kind == "clean"], rows[kind == "attr_only"], rows[kind == "protected"]
        destroyed = rows[kind == "destroyed"]
        rate(f"asr_clean/{m}", clean, "cos_target", "tau1", True, asr)
        rate(f"esr_clean/{m}", clean, "cos_target", "tau2", False, esr)  # ESR's ceiling: the clean face itself
        if len(attr):
            rate(f"asr_attr_only/{m}", attr, "cos_target", "tau1", True, asr)
            rate(f"esr_attr_only/{m}", attr, "cos_target", "tau2", False, esr)
        if len(destroyed):
            rate(f"esr_destroyed/{m}", destroyed, "cos_target", "tau2", False, esr)  # passes without restoring
            if destroyed["cos_source"].notna().all():
                rate(f"idr_destroyed/{m}", destroyed, "cos_source", FAR_COLUMN_IDR, True, idr)
        pairs = rows.drop_duplicates("target")
        out[f"target_pair_cos/{m}"] = float(pairs["cos_target_pair"].astype("float64").mean())
        out[f"target_pair_verified/{m}"] = attack_success_rate(pairs, cos="cos_target_pair")
        if clean["cos_source"].notna().all():
            rate(f"idr_clean/{m}", clean, "cos_source", FAR_COLUMN_IDR, True, idr)
        for t, p in protected.groupby("transform", sort=False):
            sfx = "" if t == "none" else f"@{t}"
            rate(f"asr{sfx}/{m}", p, "cos_target", "tau1", True, asr)
            if p["cos_restored_target"].notna().all():
                rate(f"esr{sfx}/{m}", p, "cos_restored_target", "tau2", False, esr)
            rate(f"esr_unrestored{sfx}/{m}", p, "cos_target", "tau2", False, esr)  # Eq. 18 without R
            if p["cos_restored_source"].notna().all():
                rate(f"idr{sfx}/{m}", p, "cos_restored_source", FAR_COLUMN_IDR, True, idr)
            out[f"cos{sfx}/{m}"] = float(p["cos_target"].astype("float64").mean())
            out[f"n_images{sfx}/{m}"] = float(len(p))
            out[f"n_identities{sfx}/{m}"] = float(p["source_identity"].nunique())
    for group, role in (("surrogates", "surrogate"), ("black_box", "black_box")):
        names = roles[role]
        for key in sorted({k.split("/")[0] for k in out} if names else ()):
            vals = [out[f"{key}/{n}"] for n in names if f"{key}/{n}" in out]
            if vals:
                out[f"{key}/{group}_mean"] = sum(vals) / len(vals)
                members = [cells[f"{key}/{n}"] for n in names if f"{key}/{n}" in cells]
                if len(members) == len(vals) and members:  # a rate: pool its models' rows
                    cells[f"{key}/{group}_mean"] = (np.concatenate([h for h, _ in members]),
                                                    np.concatenate([c for _, c in members]))
    if intervals:
        for key, (hits, clusters) in cells.items():
            name, who = key.split("/", 1)
            rate_name, at, transform = name.partition("@")  # asr@jpeg -> asr_lo@jpeg
            lo, hi = identity_bootstrap_interval(hits, clusters, n_boot=n_boot)
            out[f"{rate_name}_lo{at}{transform}/{who}"], out[f"{rate_name}_hi{at}{transform}/{who}"] = lo, hi
    return {f"{prefix}{k}": v for k, v in out.items()}


def attribute_accuracy(pred01: Tensor, att_b01: Tensor, att_a01: Tensor) -> dict[str, float]:
    """Accuracy of predicted attributes of edited images against the requested ``att_b``.

    Args:
        pred01: (N, n) predicted 0/1 attributes of the edited images.
        att_b01: (N, n) requested attributes.
        att_a01: (N, n) source attributes (to find the edited ones).

    Returns:
        ``{"all": accuracy over every attribute, "edited": accuracy over the
        attributes that differ between att_a and att_b (NaN if none),
        "n_edited": how many such entries}``.
    """
    if pred01.shape != att_b01.shape or att_a01.shape != att_b01.shape:
        raise ValueError(f"shapes differ: pred {tuple(pred01.shape)}, att_b {tuple(att_b01.shape)}, "
                         f"att_a {tuple(att_a01.shape)}")
    hit = (pred01.round() == att_b01.round()).float()
    edited = att_a01.round() != att_b01.round()
    n_edited = int(edited.sum())
    return {
        "all": float(hit.mean()),
        "edited": float(hit[edited].mean()) if n_edited else float("nan"),
        "n_edited": n_edited,
    }

