"""Thresholds calibrated here, keyed by (model name, weights digest, calibration set).

A threshold belongs to the weights it was measured with and to the pairs it
was read off, so each calibration is its own JSON file::

    cache_dir()/thresholds/<name>/<weights_digest[:16]>/<calibration_set>.json

- ``weights_digest`` is :func:`~erasablemask.models.fr.weights.weights_digest`
  of the backbone that was calibrated (the full digest is stored inside and
  checked on reading);
- ``calibration_set`` names the data, as an id of letters, digits, ``.``,
  ``_`` and ``-``: ``pairs-<16 hex>`` for a pairs file and its images
  (``erasablemask fr calibrate``), ``miniworld-<16 hex>`` for a mini-world's
  held-out identities (the mini zoo). The models layer treats it as opaque.

So two worlds' mini models, or two pairs sets, never overwrite each other;
calibrating the same weights on the same set again replaces that one file.

Which thresholds :func:`~erasablemask.models.fr.registry.build` gives a
model (:func:`select_calibration`), for the weights it actually loaded:

- ``calibration=ID``: that set's, or :class:`UncalibratedError` listing the
  sets there are for these weights;
- ``calibration=None`` (default): the only set calibrated for these weights;
  none: the published thresholds of the spec (if any); several:
  :class:`AmbiguousCalibration`, listing them with their sources and saying
  how to choose;
- ``calibration="published"`` (:data:`PUBLISHED`): calibrations here are
  ignored; the spec's published thresholds only.

Calibrated thresholds override published ones at the FARs they cover; the
source names both (:func:`with_calibration`).

Files of the old flat layout, ``thresholds/<name>.json``, do not say which
weights they were measured with: they are ignored (not migrated), and
``erasablemask fr list`` names them (:func:`legacy_threshold_files`) so they
can be deleted or the calibration re-run.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from erasablemask.models.atomic_files import write_text_atomic
from erasablemask.models.fr.spec import AmbiguousCalibration, FRSpec, UncalibratedError
from erasablemask.models.fr.weights import cache_dir

__all__ = [
    "PUBLISHED",
    "calibration_path",
    "save_calibration",
    "read_calibration",
    "list_calibrations",
    "select_calibration",
    "with_calibration",
    "legacy_threshold_files",
]

PUBLISHED = "published"
"""``calibration=PUBLISHED``: use only the spec's published thresholds, ignoring calibrations here."""

_SET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_key(name: str, weights_digest: str, calibration_set: str) -> None:
    if not _HEX64.match(weights_digest or ""):
        raise ValueError(f"weights digest of FR model '{name}' must be 64 hex characters, got {weights_digest!r}")
    if not _SET_ID.match(calibration_set or "") or calibration_set == PUBLISHED:
        raise ValueError(
            f"calibration set id {calibration_set!r} of FR model '{name}' must be letters, digits, '.', '_' or '-' "
            f"(at most 128, not {PUBLISHED!r}), e.g. 'pairs-0123abcd4567ef89'"
        )


def calibration_path(name: str, weights_digest: str, calibration_set: str) -> Path:
    """Where the calibration of ``name`` with these weights on this set is stored (may not exist)."""
    _check_key(name, weights_digest, calibration_set)
    return cache_dir() / "thresholds" / name / weights_digest[:16] / f"{calibration_set}.json"


def save_calibration(name: str, weights_digest: str, calibration_set: str, record: dict) -> Path:
    """Atomically write a calibration record under its key (replacing that key's file only).

    Args:
        name: registry name of the model.
        weights_digest: :func:`~erasablemask.models.fr.weights.weights_digest` of the calibrated backbone.
        calibration_set: id of the data (see module doc).
        record: ``{"thresholds": {far: thr}, "source": str, ...}``; ``tar`` and
            ``actual_far`` (``{far: value}``) and any JSON-serialisable extras
            are kept. Float FAR keys are written as ``repr`` strings.

    Returns:
        The JSON path (:func:`calibration_path`).
    """
    path = calibration_path(name, weights_digest, calibration_set)
    if not record.get("thresholds") or "source" not in record:
        raise ValueError(f"calibration record of FR model '{name}' needs 'thresholds' and 'source'")
    out = {"model": name, "weights_digest": weights_digest, "calibration_set": calibration_set, **record}
    for key in ("thresholds", "tar", "actual_far"):
        if key in out:
            out[key] = {repr(float(far)): float(v) for far, v in out[key].items()}
    write_text_atomic(path, json.dumps(out, indent=2))
    return path


def _parse(path: Path, name: str) -> dict:
    """A record with float FAR keys and its ``path``; ValueError naming the file and the fix if unreadable."""
    try:
        data = json.loads(path.read_text())
        for key in ("thresholds", "tar", "actual_far"):
            data[key] = {float(k): float(v) for k, v in data.get(key, {}).items()}
        if not data["thresholds"] or not isinstance(data["weights_digest"], str):
            raise ValueError("no thresholds or no weights digest")
        data.setdefault("calibration_set", path.stem)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"calibrated thresholds of FR model '{name}' in '{path}' are unreadable ({e!r}); "
            f"delete the file and run `erasablemask fr calibrate {name} ...` again"
        ) from e
    data["path"] = str(path)
    return data


def read_calibration(name: str, weights_digest: str, calibration_set: str) -> dict | None:
    """The record of ``name`` for these weights on this set, or None.

    Returns:
        ``{"thresholds": {far: thr}, "tar": {far: tar}, "actual_far": {...},
        "source": str, "weights_digest", "calibration_set", "path", ...}``.

    Raises:
        ValueError: the file exists but is unreadable (names it and the fix).
    """
    path = calibration_path(name, weights_digest, calibration_set)
    if not path.is_file():
        return None
    data = _parse(path, name)
    return data if data["weights_digest"] == weights_digest else None


def list_calibrations(name: str, weights_digest: str | None = None) -> list[dict]:
    """Every record of ``name`` (of these weights only, if given), sorted by weights digest and set id."""
    root = cache_dir() / "thresholds" / name
    folders = [root / weights_digest[:16]] if weights_digest else sorted(p for p in root.glob("*") if p.is_dir())
    records = [_parse(f, name) for folder in folders for f in sorted(folder.glob("*.json"))]
    if weights_digest:
        records = [r for r in records if r["weights_digest"] == weights_digest]
    return records


def select_calibration(name: str, weights_digest: str, calibration: str | None = None) -> dict | None:
    """The record whose thresholds a model with these weights gets (rules in the module doc).

    Raises:
        UncalibratedError: ``calibration`` names a set not calibrated for these weights.
        AmbiguousCalibration: ``calibration`` is None and several sets exist.
    """
    if calibration == PUBLISHED:
        return None
    found = list_calibrations(name, weights_digest)
    if calibration is not None:
        chosen = [r for r in found if r["calibration_set"] == calibration]
        if chosen:
            return chosen[0]
        there = ", ".join(r["calibration_set"] for r in found) or "none"
        raise UncalibratedError(
            f"FR model '{name}' with weights {weights_digest[:16]} has no calibration set '{calibration}' "
            f"(calibrated here for these weights: {there}); calibrate it, or pass one of those "
            f"(or calibration='{PUBLISHED}' for the published thresholds)"
        )
    if len(found) > 1:
        listing = "; ".join(f"'{r['calibration_set']}' ({r.get('source', '?')}) in {r['path']}" for r in found)
        raise AmbiguousCalibration(
            f"FR model '{name}' with weights {weights_digest[:16]} has {len(found)} calibration sets: {listing}. "
            f"Choose one: build('{name}', calibration=ID) or `erasablemask fr verify {name} --calibration ID` "
            f"(`erasablemask fr list` shows them), or delete the files that should not count"
        )
    return found[0] if found else None


def with_calibration(spec: FRSpec, record: dict | None) -> FRSpec:
    """``spec`` with ``record``'s thresholds over the published ones, and a source naming both."""
    if record is None:
        return spec
    calibrated = record["thresholds"]
    source = f"calibrated here: {record.get('source', record.get('path', '?'))}"
    kept = sorted(set(spec.thresholds) - set(calibrated))
    if kept:  # published thresholds at FARs the calibration did not cover
        source += f"; FAR {', '.join(f'{f:g}' for f in kept)}: {spec.threshold_source}"
    return replace(spec, thresholds={**spec.thresholds, **calibrated}, threshold_source=source)


def legacy_threshold_files() -> list[Path]:
    """Flat ``thresholds/<name>.json`` files of the old layout, which are ignored (see module doc)."""
    return sorted((cache_dir() / "thresholds").glob("*.json"))
