"""One wrapper, one registry for every face-recognition (FR) model.

Modelled on timm's registry: each model is a tiny factory function decorated
with :func:`register`, and its metadata (:class:`FRSpec`) lives beside it.
Every model is wrapped in a :class:`FaceRecognizer`, which takes images
``(N, 3, H, W)`` in ``[-1, 1]`` (RGB, any size), applies the model's own
preprocessing, and returns L2-normalised embeddings, differentiably.

Thresholds calibrated here (``erasablemask fr calibrate``) are stored as
JSON under :func:`cache_dir` ``/thresholds/<name>.json`` and picked up by
:func:`build`; published thresholds are part of the spec.

Weights, the contract every factory follows (``factory(weights)``):

- ``weights=None``: the spec's default source. ``url`` weights are downloaded
  (resumable, sha256-checked) into ``cache_dir()/weights/<name>/``;
  ``package``/``path`` weights are located on disk. Factories call
  :func:`resolve_weights` for this, so all models behave the same.
- ``weights=RANDOM_INIT`` (the string ``"random"``): the architecture with
  its random initialisation, nothing loaded (tests, checkpoint-key checks).
- ``weights=<path>``: that file, instead of the spec's source.

A factory that cannot get its weights here (offline, package not installed,
file missing) raises :class:`WeightsUnavailable`, whose message says how to
get them; tests skip on it with that message as the reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from erasablemask.models.image_checks import check_image_range

WeightsKind = Literal["none", "path", "url", "package", "trained_here"]

RANDOM_INIT = "random"
"""Pass as ``weights`` to build the architecture without loading any weights."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from.

    Attributes:
        kind: ``none`` (random init), ``path`` (a local file the user gives),
            ``url`` (downloaded and checked against ``sha256``), ``package``
            (shipped inside an installed package), ``trained_here``
            (mini-world models trained on demand and cached).
        location: ``path``: a file, absolute or relative to
            ``weights_home(name)``; ``url``: the URL; ``package``:
            ``"module:relative/path"`` inside an importable module (or a
            free-form description for factories that locate it themselves).
        sha256: expected digest for ``url`` weights.
        note: licence or provenance remark.
    """

    kind: WeightsKind = "none"
    location: str = ""
    sha256: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input, starting from RGB in [-1, 1].

    Attributes:
        size: (height, width) the whole image is resized to.
        resize: interpolation mode for ``F.interpolate`` (``bilinear`` or ``area``).
        channel_order: ``RGB`` or ``BGR``.
        mean: per-channel mean subtracted after mapping to ``scale`` units.
        std: per-channel std divided by after subtracting ``mean``.
        scale: ``"[-1,1]"``, ``"[0,1]"`` or ``"[0,255]"``: the units mean/std are in.
        center_crop: fraction of the (square) image kept before resizing (1.0 = none).
    """

    size: tuple[int, int] = (112, 112)
    resize: str = "bilinear"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: Literal["[-1,1]", "[0,1]", "[0,255]"] = "[-1,1]"
    center_crop: float = 1.0

    def describe(self) -> str:
        crop = f"centre-crop {self.center_crop:g}, " if self.center_crop < 1 else ""
        return (
            f"{crop}{self.resize} resize to {self.size[0]}x{self.size[1]}, {self.channel_order}, "
            f"{self.scale} then (x-{list(self.mean)})/{list(self.std)}"
        )


@dataclass(frozen=True)
class FRSpec:
    """Metadata of one registered FR model.

    Attributes:
        name: registry name.
        family: architecture family (``ir``, ``ir_se``, ``mobilefacenet``, ...).
        embedding_size: length of the embedding.
        preprocessing: the model's input convention.
        weights: where weights come from.
        thresholds: cosine threshold per FAR (e.g. ``{0.01: 0.1668}``).
        threshold_source: provenance of ``thresholds``.
        role_hint: ``paper_zoo``, ``real`` or ``mini``.
    """

    name: str
    family: str
    embedding_size: int
    preprocessing: Preprocessing
    weights: WeightsSource = WeightsSource()
    thresholds: dict[float, float] = field(default_factory=dict)
    threshold_source: str = "none: calibrate with `erasablemask fr calibrate`"
    role_hint: str = ""


def cache_dir() -> Path:
    """Root of on-disk caches (weights, thresholds, mini models).

    ``$ERASABLEMASK_HOME`` if set, else ``~/.cache/erasablemask``.
    """
    return Path(os.environ.get("ERASABLEMASK_HOME", Path.home() / ".cache" / "erasablemask"))


def weights_home(name: str) -> Path:
    """Folder where model ``name``'s weights are downloaded or dropped by hand."""
    return cache_dir() / "weights" / name


def thresholds_path(name: str) -> Path:
    """Where calibrated thresholds of model ``name`` are stored (JSON)."""
    return cache_dir() / "thresholds" / f"{name}.json"


class UncalibratedError(LookupError):
    """Raised when a threshold is asked of a model that has none at that FAR."""


class WeightsUnavailable(RuntimeError):
    """A model's weights cannot be obtained on this machine.

    Raised by factories (usually via :func:`resolve_weights`) when the weights
    are not cached and cannot be downloaded, the shipping package is not
    installed, or a weights file is missing. The message says how to get them.
    Tests parametrised over the registry skip with this message as the reason.
    """


def __getattr__(name: str):
    """Lazy re-export: ``resolve_weights`` lives in :mod:`~erasablemask.models.fr.download`."""
    if name == "resolve_weights":
        from erasablemask.models.fr.download import resolve_weights

        return resolve_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_calibration(name: str) -> dict | None:
    """The calibration record saved for ``name`` (see :func:`thresholds_path`), or None.

    Returns:
        ``{"thresholds": {far: thr}, "tar": {far: tar}, "source": str,
        "n_genuine": int, "n_impostor": int, ...}`` with float FAR keys.

    Raises:
        ValueError: the file exists but is not a valid record (names the file
            and the fix).
    """
    path = thresholds_path(name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["thresholds"] = {float(k): float(v) for k, v in data["thresholds"].items()}
        data["tar"] = {float(k): float(v) for k, v in data.get("tar", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"calibrated thresholds of FR model '{name}' in '{path}' are unreadable ({e!r}); "
            f"delete the file and run `erasablemask fr calibrate {name} ...` again"
        ) from e
    return data


class FaceRecognizer(nn.Module):
    """FR model wrapper: ``[-1, 1]`` RGB images in, unit-norm embeddings out.

    Args:
        backbone: the architecture itself (state-dict compatible with the
            public checkpoint where there is one).
        spec: the model's metadata.
        embed: optional function ``(backbone, preprocessed) -> raw embedding``
            for backbones whose forward returns more than the embedding
            (e.g. facenet with its logits layer). Default: ``backbone(x)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        spec: FRSpec,
        embed: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self._embed = embed
        p = spec.preprocessing
        self.register_buffer("_mean", torch.tensor(p.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(p.std).view(1, 3, 1, 1), persistent=False)

    def crop_and_resize(self, x: torch.Tensor) -> torch.Tensor:
        """The geometric part of :meth:`preprocess`: centre crop, then resize to ``spec.preprocessing.size``.

        ``(N, 3, H, W)`` in, ``(N, 3, *size)`` out, values unchanged in kind.
        Without a centre crop, an image already at ``size`` passes through
        ``forward`` unresized, so callers may apply this once ahead of time
        (e.g. to batch images of different sizes) with identical results.
        """
        p = self.spec.preprocessing
        if p.center_crop < 1.0:
            h, w = x.shape[-2:]
            ch, cw = round(h * p.center_crop), round(w * p.center_crop)
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        if tuple(x.shape[-2:]) != tuple(p.size):
            kwargs = {"align_corners": False} if p.resize in ("bilinear", "bicubic") else {}
            x = F.interpolate(x, size=p.size, mode=p.resize, **kwargs)
        return x

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, 3, H, W)`` RGB in [-1, 1] to the backbone's input convention."""
        p = self.spec.preprocessing
        x = self.crop_and_resize(x)
        if p.channel_order == "BGR":
            x = x.flip(1)
        if p.scale == "[0,1]":
            x = (x + 1) / 2
        elif p.scale == "[0,255]":
            x = (x + 1) * 127.5
        return (x - self._mean) / self._std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Args:
            x: ``(N, 3, H, W)`` RGB in [-1, 1].

        Returns:
            ``(N, embedding_size)`` L2-normalised embeddings.
        """
        check_image_range(x, f"input of FR model '{self.spec.name}'")
        z = self.preprocess(x)
        raw = self._embed(self.backbone, z) if self._embed else self.backbone(z)
        return F.normalize(raw.flatten(1), dim=1)

    def threshold(self, far: float) -> float:
        """Cosine threshold at ``far``; raises :class:`UncalibratedError` if unknown."""
        for k, v in self.spec.thresholds.items():
            if abs(k - far) < 1e-12:
                return v
        raise UncalibratedError(
            f"FR model '{self.spec.name}' has no threshold at FAR {far:g} "
            f"(known: {sorted(self.spec.thresholds) or 'none'}); run "
            f"`erasablemask fr calibrate {self.spec.name} --pairs PAIRS.csv --images DIR`"
        )


Factory = Callable[..., FaceRecognizer]
_REGISTRY: dict[str, Factory] = {}
_SPECS: dict[str, FRSpec] = {}


def register(spec: FRSpec) -> Callable[[Factory], Factory]:
    """Register a factory ``(weights: str | Path | None) -> FaceRecognizer`` under ``spec.name``.

    The factory follows the weights contract in the module docstring: it
    calls ``resolve_weights(spec, weights)`` (or behaves the same way) and
    raises :class:`WeightsUnavailable` when its weights cannot be had here.
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
    """Spec of ``name`` with any thresholds calibrated here merged in."""
    _load_all()
    if name not in _SPECS:
        raise KeyError(f"unknown FR model '{name}'; available: {', '.join(sorted(_SPECS))}")
    spec = _SPECS[name]
    data = read_calibration(name)
    if data is not None:
        calibrated = data["thresholds"]
        source = f"calibrated here: {data.get('source', thresholds_path(name))}"
        kept = sorted(set(spec.thresholds) - set(calibrated))
        if kept:  # published thresholds at FARs the calibration did not cover
            source += f"; FAR {', '.join(f'{f:g}' for f in kept)}: {spec.threshold_source}"
        spec = replace(spec, thresholds={**spec.thresholds, **calibrated}, threshold_source=source)
    return spec


def build(name: str, weights: str | Path | None = None) -> FaceRecognizer:
    """Build a registered FR model.

    Args:
        name: registry name (see :func:`available`).
        weights: ``None`` for the spec's default source (downloaded or
            located as needed), :data:`RANDOM_INIT` for no weights, or a path
            overriding the spec's source.

    Returns:
        A :class:`FaceRecognizer` in eval mode.

    Raises:
        KeyError: unknown ``name`` (the message lists the available names).
        WeightsUnavailable: the weights cannot be obtained on this machine.
    """
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown FR model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](weights)
    model.spec = get_spec(name) if model.spec.name == name else model.spec
    return model.eval()
