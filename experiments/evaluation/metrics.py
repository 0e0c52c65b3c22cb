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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import Tensor

__all__ = [
    "IDR_FAR", "cosine", "attack_success_rate", "erasion_success_rate", "identity_restoration_rate", "success_flags",
    "summary_metrics", "attribute_accuracy",
]

IDR_FAR = 0.01  # identity restoration: verified as the source at the FAR-0.01 threshold (column thr_far_0p01)


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


def summary_metrics(records: pd.DataFrame, prefix: str = "") -> dict[str, float]:
    """The string-keyed summary of one evaluation's records (what MLflow and the CLI's table show).

    Per model ``m`` (in the order the rows name them): ``asr_clean/m``,
    ``asr_attr_only/m`` (schemes that edit attributes), ``target_pair_cos/m``
    and ``target_pair_verified/m`` (over the model's distinct targets),
    ``idr_clean/m`` (identities known); per protected transform ``t``
    (suffix ``@t``, none for ``"none"``): ``asr``, ``esr`` (schemes that
    erase), ``esr_unrestored``, ``idr`` (erase + identities), ``cos`` (mean
    cosine to the target). Then ``<key>/surrogates_mean`` and
    ``<key>/black_box_mean``: each key's mean over the models of that role.

    Args:
        records: the rows of one evaluation (one ``method``).
        prefix: prepended to every key (``"val/"`` for per-epoch validation).
    """
    out: dict[str, float] = {}
    roles: dict[str, list[str]] = {"surrogate": [], "black_box": []}
    for m, rows in records.groupby("model", sort=False):
        roles[str(rows["role"].iloc[0])].append(m)
        kind = rows["kind"]
        clean, attr, protected = rows[kind == "clean"], rows[kind == "attr_only"], rows[kind == "protected"]
        out[f"asr_clean/{m}"] = attack_success_rate(clean)
        if len(attr):
            out[f"asr_attr_only/{m}"] = attack_success_rate(attr)
        pairs = rows.drop_duplicates("target")
        out[f"target_pair_cos/{m}"] = float(pairs["cos_target_pair"].astype("float64").mean())
        out[f"target_pair_verified/{m}"] = attack_success_rate(pairs, cos="cos_target_pair")
        if clean["cos_source"].notna().all():
            out[f"idr_clean/{m}"] = identity_restoration_rate(clean, cos="cos_source")
        for t, p in protected.groupby("transform", sort=False):
            sfx = "" if t == "none" else f"@{t}"
            out[f"asr{sfx}/{m}"] = attack_success_rate(p)
            if p["cos_restored_target"].notna().all():
                out[f"esr{sfx}/{m}"] = erasion_success_rate(p)
            out[f"esr_unrestored{sfx}/{m}"] = erasion_success_rate(p, cos="cos_target")  # Eq. 18 without R
            if p["cos_restored_source"].notna().all():
                out[f"idr{sfx}/{m}"] = identity_restoration_rate(p)
            out[f"cos{sfx}/{m}"] = float(p["cos_target"].astype("float64").mean())
    for group, role in (("surrogates", "surrogate"), ("black_box", "black_box")):
        names = roles[role]
        for key in sorted({k.split("/")[0] for k in out} if names else ()):
            vals = [out[f"{key}/{n}"] for n in names if f"{key}/{n}" in out]
            if vals:
                out[f"{key}/{group}_mean"] = sum(vals) / len(vals)
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

