"""What the registry knows about an FR model before it is built: its spec.

An :class:`FRSpec` says how a model wants its input (:class:`Preprocessing`),
where its weights come from (:class:`WeightsSource`) and which thresholds
were *published* for it, with their source. Thresholds calibrated here are
not part of the registered spec: they belong to a particular weights file
and calibration set (see :mod:`erasablemask.models.fr.calibrations`) and are
merged in by :func:`~erasablemask.models.fr.registry.build` for the weights
it actually loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "RANDOM_INIT",
    "WeightsKind",
    "WeightsSource",
    "Preprocessing",
    "FRSpec",
    "UncalibratedError",
    "AmbiguousCalibration",
    "WeightsUnavailable",
]

WeightsKind = Literal["none", "path", "url", "package", "trained_here"]

RANDOM_INIT = "random"
"""Pass as ``weights`` to build the architecture without loading any weights."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from.

    Attributes:
        kind: ``none`` (nothing to load), ``path`` (a local file the user
            gives), ``url`` (downloaded and checked against ``sha256``),
            ``package`` (shipped inside an installed package, checked against
            ``sha256`` when given), ``trained_here`` (trained by the
            experiments layer, e.g. the mini-world zoo; the caller passes the
            file, since the weights depend on what they were trained on).
        location: ``path``: a file, absolute or relative to
            ``weights_home(name)``; ``url``: the URL; ``package``:
            ``"module:relative/path"`` inside an importable module;
            ``trained_here``: where the experiments layer caches the file
            (documentation only).
        sha256: expected digest of the ``url`` or ``package`` file.
        note: licence, provenance, or how to get the weights.
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
        thresholds: cosine threshold per FAR (e.g. ``{0.01: 0.1668}``): the
            published ones in a registered spec; a built model's spec adds
            those calibrated here for its weights.
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


class UncalibratedError(LookupError):
    """A threshold (or a named calibration set) was asked of a model that has none."""


class AmbiguousCalibration(LookupError):
    """Several calibration sets exist for the same weights and none was named.

    The message lists them and says how to choose one (``calibration=ID``,
    ``--calibration ID``, or deleting the files that should not count).
    """


class WeightsUnavailable(RuntimeError):
    """A model's weights cannot be obtained on this machine.

    Raised by factories (via :func:`~erasablemask.models.fr.weights.resolve_weights`)
    when the weights are not cached and cannot be downloaded, the shipping
    package is not installed, a weights file is missing, or (``trained_here``)
    no trained file was given. The message says how to get them. Tests
    parametrised over the registry skip with this message as the reason.
    """
