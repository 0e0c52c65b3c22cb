"""Verification thresholds at a chosen false-accept rate (FAR), and their TAR.

The LFW recipe the field uses (NOTES.md): score genuine and impostor pairs by
cosine similarity, read the threshold off the impostor distribution, report
the true-accept rate (TAR) of genuine pairs at that threshold.

Threshold rule (exact, no interpolation), for ``n`` impostor scores sorted
ascending ``s[0] <= ... <= s[n-1]`` and ``k = floor(far * n)`` false accepts
allowed: ``threshold = s[n-k-1]``. Acceptance is strict (``score >
threshold``), so at most ``k`` impostors are accepted and
``actual_far <= far``; it is the smallest threshold with that property. Ties
at the threshold count as rejected, so with tied scores ``actual_far`` can be
below ``far`` (it is reported). Because ``k`` must be large enough for the
estimate to mean anything, a FAR with fewer than ``min_false_accepts``
expected false accepts (``far * n``) raises :class:`ValueError`.

Saved thresholds belong to (model, weights, calibration set): they are
stored by :func:`erasablemask.models.fr.calibrations.save_calibration` under
the model's :attr:`~erasablemask.models.fr.recognizer.FaceRecognizer.weights_digest`
and a calibration-set id, and ``build`` gives them to a model with exactly
those weights. A pairs file's set id is :func:`pairs_calibration_set`: a
digest of the pairs and of the bytes of every image they name, so another
pairs file (or the same names with other photos) is another set, and never
overwrites this one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from erasablemask.experiments.fr_tools.verification import embed_images
from erasablemask.models.fr.calibrations import save_calibration
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.registry import FaceRecognizer

__all__ = [
    "DEFAULT_FARS",
    "check_fars",
    "pairs_calibration_set",
    "read_pairs",
    "roc_auc",
    "save_thresholds",
    "score_pairs",
    "thresholds_at_far",
]

DEFAULT_FARS: tuple[float, ...] = (0.1, 0.01, 0.001)


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"no {name} scores; the pairs file needs rows with same={int(name == 'genuine')}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} scores contain NaN or inf; check the model's embeddings")
    return arr


def check_fars(fars: Sequence[float], n_impostor: int, *, min_false_accepts: float = 10.0) -> None:
    """Raise ValueError unless every FAR is in (0, 1) and ``far * n_impostor >= min_false_accepts``.

    Cheap: callers run it on pair counts before embedding any image.
    """
    if len(fars) == 0:
        raise ValueError("no FAR given; e.g. 0.1 0.01 0.001")
    for far in map(float, fars):
        if not 0.0 < far < 1.0:
            raise ValueError(f"FAR must be in (0, 1), got {far:g}")
        if far * n_impostor < min_false_accepts * (1 - 1e-9):
            need = math.ceil(min_false_accepts / far * (1 - 1e-9))
            raise ValueError(
                f"too few impostor scores for FAR {far:g}: {n_impostor} give {far * n_impostor:.3g} "
                f"expected false accepts, need >= {min_false_accepts:g}, i.e. >= {need} impostor "
                "pairs; add impostor pairs or drop this FAR"
            )


def thresholds_at_far(
    genuine: np.ndarray,
    impostor: np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
    *,
    min_false_accepts: float = 10.0,
) -> list[dict]:
    """Thresholds read off the impostor scores at each FAR, with the TAR there.

    Args:
        genuine: similarity scores of same-identity pairs, any shape.
        impostor: similarity scores of different-identity pairs, any shape.
        fars: target false-accept rates, each in (0, 1).
        min_false_accepts: smallest ``far * len(impostor)`` accepted; below it
            the threshold would rest on too few impostor scores.

    Returns:
        One dict per FAR, in the order given: ``far``, ``threshold`` (accept when
        ``score > threshold``), ``tar`` (fraction of genuine scores above it),
        ``actual_far`` (fraction of impostor scores above it, ``<= far``).

    Raises:
        ValueError: empty or non-finite scores, a FAR outside (0, 1), or too
            few impostor scores for a FAR (the message says how many are needed).
    """
    gen = _scores(genuine, "genuine")
    imp = np.sort(_scores(impostor, "impostor"))
    n = imp.size
    check_fars(fars, n, min_false_accepts=min_false_accepts)
    rows = []
    for far in map(float, fars):
        k = math.floor(far * n * (1 + 1e-12))  # false accepts allowed (guard 0.1*n round-off)
        threshold = float(imp[n - k - 1])
        rows.append(
            {
                "far": far,
                "threshold": threshold,
                "tar": float(np.mean(gen > threshold)),
                "actual_far": float(np.mean(imp > threshold)),
            }
        )
    return rows


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC curve: P(genuine score > impostor score), ties count 1/2.

    Computed exactly from average ranks (Mann-Whitney U).
    """
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    ranks = pd.Series(np.concatenate([gen, imp])).rank(method="average").to_numpy()
    u = ranks[: gen.size].sum() - gen.size * (gen.size + 1) / 2
    return float(u / (gen.size * imp.size))


def read_pairs(pairs_csv: str | Path, images_dir: str | Path) -> pd.DataFrame:
    """Read a pairs file (columns ``a``, ``b``, ``same``) and check every image exists.

    Paths in ``a``/``b`` are relative to ``images_dir`` (or absolute). ``same``
    is 1 for genuine pairs, 0 for impostor pairs.

    Raises:
        FileNotFoundError: the CSV, the folder or any listed image is missing
            (the first few missing files are named).
        ValueError: missing columns or ``same`` values other than 0/1.
    """
    pairs_csv, images_dir = Path(pairs_csv), Path(images_dir)
    if not pairs_csv.is_file():
        raise FileNotFoundError(f"pairs file '{pairs_csv}' not found; give a CSV with columns a,b,same")
    if not images_dir.is_dir():
        raise FileNotFoundError(
            f"images folder '{images_dir}' not found; --images is the folder the pair paths are relative to"
        )
    try:
        df = pd.read_csv(pairs_csv)
    except pd.errors.EmptyDataError:
        raise ValueError(f"pairs file '{pairs_csv}' is empty; it needs a header a,b,same and one row per pair") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"pairs file '{pairs_csv}' is not a readable CSV ({type(exc).__name__}: {exc}); "
                         f"it needs a header a,b,same and one row per pair") from None
    if df.empty:
        raise ValueError(f"pairs file '{pairs_csv}' has a header but no pairs; add one row a,b,same per pair")
    missing_cols = {"a", "b", "same"} - set(df.columns)
    if missing_cols:
        raise ValueError(f"pairs file '{pairs_csv}' lacks columns {sorted(missing_cols)}; it needs a,b,same")
    if not df["same"].isin([0, 1]).all():
        raise ValueError(f"pairs file '{pairs_csv}': column 'same' must hold 0 or 1 only")
    files = pd.unique(pd.concat([df["a"], df["b"]]).astype(str))
    missing = [f for f in files if not (images_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in '{pairs_csv}' are missing under '{images_dir}', "
            f"e.g. {missing[:3]}; fix --images or the pairs file"
        )
    return df.assign(a=df["a"].astype(str), b=df["b"].astype(str), same=df["same"].astype(int))


def score_pairs(
    model: FaceRecognizer,
    pairs_df: pd.DataFrame,
    images_dir: str | Path,
    *,
    batch_size: int = 32,
    image_size: tuple[int, int] | None = None,
    progress: bool = True,
    embed: Callable[..., torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of genuine and impostor pairs; each image is loaded and embedded once.

    Args:
        model: a built FR model.
        pairs_df: columns ``a``, ``b`` (paths relative to ``images_dir``) and
            ``same`` (1 genuine, 0 impostor), e.g. from :func:`read_pairs`.
        images_dir: folder the paths are relative to.
        batch_size: images per forward pass.
        image_size: optional ``(height, width)`` every image is resized to on
            load (``None``: native size; the model resizes).
        progress: show tqdm bars.
        embed: ``embed(paths, batch_size=, image_size=, progress=)`` -> unit-norm rows, instead of
            :func:`embed_images` with ``model`` (e.g. an aligning embedder,
            :class:`erasablemask.experiments.photos.fr_align.AlignedEmbedder`).

    Returns:
        ``(genuine, impostor)`` float64 arrays of cosine similarities in [-1, 1],
        in the order of the rows of ``pairs_df``.
    """
    images_dir = Path(images_dir)
    files = list(pd.unique(pd.concat([pairs_df["a"], pairs_df["b"]]).astype(str)))
    index = {f: i for i, f in enumerate(files)}
    emb = (embed or (lambda paths, **kw: embed_images(model, paths, **kw)))(
        [images_dir / f for f in files], batch_size=batch_size, image_size=image_size, progress=progress
    )
    ia = torch.tensor(pairs_df["a"].astype(str).map(index).to_numpy(dtype=np.int64))
    ib = torch.tensor(pairs_df["b"].astype(str).map(index).to_numpy(dtype=np.int64))
    cos = (emb[ia] * emb[ib]).sum(1).double().numpy()
    same = pairs_df["same"].to_numpy().astype(bool)
    return cos[same], cos[~same]


def pairs_calibration_set(pairs_df: pd.DataFrame, images_dir: str | Path) -> str:
    """Id of the calibration set a pairs table defines: ``pairs-<16 hex>``.

    The digest covers the rows ``(a, b, same)`` in order and the sha256 of
    every image file they name (so renaming the folder keeps the id, and
    other photos under the same names change it).
    """
    images_dir = Path(images_dir)
    h = hashlib.sha256()
    for a, b, same in pairs_df[["a", "b", "same"]].itertuples(index=False):
        h.update(f"{a}\t{b}\t{int(same)}\n".encode())
    for f in sorted(pd.unique(pd.concat([pairs_df["a"], pairs_df["b"]]).astype(str))):
        h.update(f"{f}\t{sha256_file(images_dir / f)}\n".encode())
    return f"pairs-{h.hexdigest()[:16]}"


def save_thresholds(
    name: str,
    weights_digest: str,
    calibration_set: str,
    rows: Sequence[dict],
    source: str,
    *,
    n_genuine: int | None = None,
    n_impostor: int | None = None,
    extra: dict | None = None,
) -> Path:
    """Atomically write calibrated thresholds where ``build`` finds them for these weights.

    Args:
        name: registry name of the model.
        weights_digest: ``model.weights_digest`` of the model that was scored.
        calibration_set: id of the pairs it was scored on (e.g. :func:`pairs_calibration_set`).
        rows: output of :func:`thresholds_at_far`.
        source: provenance (pairs file, images, weights, date), shown by ``fr list``.
        n_genuine: number of genuine pairs used.
        n_impostor: number of impostor pairs used.
        extra: more JSON-serialisable fields to record (e.g. ``auc``, ``weights``).

    Returns:
        The JSON path (:func:`~erasablemask.models.fr.calibrations.calibration_path`)
        holding ``{"thresholds": {far: thr}, "tar": {far: tar}, "actual_far":
        {far: far'}, "source", "n_genuine", "n_impostor", "weights_digest",
        "calibration_set", ...}``.
    """
    if not rows:
        raise ValueError("no threshold rows to save; compute them with thresholds_at_far")
    record = {
        "thresholds": {float(r["far"]): float(r["threshold"]) for r in rows},
        "tar": {float(r["far"]): float(r["tar"]) for r in rows},
        "actual_far": {float(r["far"]): float(r["actual_far"]) for r in rows},
        "source": source,
        "n_genuine": n_genuine,
        "n_impostor": n_impostor,
        **(extra or {}),
    }
    return save_calibration(name, weights_digest, calibration_set, record)
