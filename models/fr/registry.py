"""One registry for every face-recognition (FR) model.

Modelled on timm's registry: each model is a tiny factory function decorated
with :func:`register`, and its metadata (:class:`FRSpec`) lives beside it.
Every model is wrapped in a :class:`FaceRecognizer`, which takes images
``(N, 3, H, W)`` in ``[-1, 1]`` (RGB, any size), applies the model's own
preprocessing, and returns L2-normalised embeddings, differentiably.

Weights, the contract every factory follows (``factory(weights)``): it calls
:func:`~erasablemask.models.fr.weights.resolve_weights`, so ``None`` means
the spec's default source (downloaded, located in a package or in
:func:`weights_home`; ``trained_here`` models have none and need a file),
:data:`RANDOM_INIT` the untrained architecture, and a path that file. A
factory that cannot get its weights here raises :class:`WeightsUnavailable`,
whose message says how to get them; tests skip on it with that message as
the reason.

Thresholds: a registered spec holds the *published* thresholds (with their
source). :func:`build` hashes the weights it loaded
(:func:`~erasablemask.models.fr.weights.weights_digest`) and adds the
thresholds calibrated here for exactly those weights, from the calibration
set the caller names or the only one there is
(:mod:`erasablemask.models.fr.calibrations`). Nothing here depends on which
process builds the model: the same arguments give the same model and
thresholds in a Ray actor as in the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from erasablemask.models.fr.calibrations import (
    PUBLISHED,
    list_calibrations,
    read_calibration,
    select_calibration,
    with_calibration,
)
from erasablemask.models.fr.recognizer import FaceRecognizer
from erasablemask.models.fr.spec import (
    RANDOM_INIT,
    AmbiguousCalibration,
    FRSpec,
    Preprocessing,
    UncalibratedError,
    WeightsSource,
    WeightsUnavailable,
)
from erasablemask.models.fr.weights import cache_dir, resolve_weights, weights_digest, weights_home

__all__ = [
    "PUBLISHED",
    "RANDOM_INIT",
    "AmbiguousCalibration",
    "FaceRecognizer",
    "FRSpec",
    "Preprocessing",
    "UncalibratedError",
    "WeightsSource",
    "WeightsUnavailable",
    "available",
    "build",
    "cache_dir",
    "get_spec",
    "is_registered",
    "list_calibrations",
    "read_calibration",
    "register",
    "resolve_weights",
    "weights_digest",
    "weights_home",
]

Factory = Callable[..., FaceRecognizer]
_REGISTRY: dict[str, Factory] = {}
_SPECS: dict[str, FRSpec] = {}


def register(spec: FRSpec) -> Callable[[Factory], Factory]:
    """Register a factory ``(weights: str | Path | None) -> FaceRecognizer`` under ``spec.name``.

    The factory follows the weights contract in the module docstring: it
    calls ``resolve_weights(spec, weights)`` and raises
    :class:`WeightsUnavailable` when its weights cannot be had here.
    """

    def deco(fn: Factory) -> Factory:
        if spec.name in _REGISTRY:
            raise ValueError(f"FR model '{spec.name}' registered twice")
        _REGISTRY[spec.name] = fn
        _SPECS[spec.name] = spec
        return fn

    return deco


def _load_all() -> None:
    """Import the modules that register models (kept lazy to keep imports light)."""
    from erasablemask.models.fr import zoo  # noqa: F401  (registers on import)


def available() -> list[str]:
    """Names of every registered FR model, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_spec(name: str) -> FRSpec:
    """The registered spec of ``name``: published thresholds only (calibrations depend on weights; see :func:`build`).

    Raises:
        KeyError: unknown ``name`` (the message lists the available names).
    """
    _load_all()
    if name not in _SPECS:
        from erasablemask.models.fr.robust_zoo import register_saved

        register_saved(name)  # an entry saved by `erasablemask fr robustify` (no-op for other names)
    if name not in _SPECS:
        raise KeyError(f"unknown FR model '{name}'; available: {', '.join(sorted(_SPECS))}")
    return _SPECS[name]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered FR model, or a robust entry saved here (which it then registers)."""
    try:
        get_spec(name)
    except KeyError:
        return False
    return True


def build(name: str, weights: str | Path | None = None, *, calibration: str | None = None) -> FaceRecognizer:
    """Build a registered FR model with the thresholds that belong to its weights.

    Args:
        name: registry name (see :func:`available`).
        weights: ``None`` for the spec's default source (downloaded or
            located as needed; ``trained_here`` models have none),
            :data:`RANDOM_INIT` for no weights, or a path overriding the
            spec's source.
        calibration: which thresholds calibrated here to use for these
            weights: a calibration set id, ``None`` (the only one there is;
            published thresholds if none) or :data:`PUBLISHED` (published
            thresholds only). See :mod:`erasablemask.models.fr.calibrations`.

    Returns:
        A :class:`FaceRecognizer` in eval mode, with ``weights_digest`` and
        ``calibration_set`` set and ``spec.thresholds`` = published thresholds
        overridden by the chosen calibration.

    Raises:
        KeyError: unknown ``name`` (the message lists the available names).
        WeightsUnavailable: the weights cannot be obtained on this machine.
        UncalibratedError: ``calibration`` names a set not calibrated for these weights.
        AmbiguousCalibration: several sets exist for these weights and none was named.
    """
    spec = get_spec(name)
    model = _REGISTRY[name](weights)
    model.weights_digest = weights_digest(model.backbone)
    record = select_calibration(name, model.weights_digest, calibration)
    model.spec = with_calibration(spec if model.spec.name == name else model.spec, record)
    model.calibration_set = record["calibration_set"] if record else None
    return model.eval()
