"""The one FR model wrapper: ``[-1, 1]`` RGB images in, unit-norm embeddings out, differentiably.

Every registered model is a :class:`FaceRecognizer` around its backbone. It
applies the model's own preprocessing (:class:`~erasablemask.models.fr.spec.Preprocessing`)
and L2-normalises the embedding. A model built by
:func:`~erasablemask.models.fr.registry.build` also knows which weights it
holds (:attr:`FaceRecognizer.weights_digest`) and which calibration set its
thresholds come from (:attr:`FaceRecognizer.calibration_set`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from erasablemask.models.fr.spec import FRSpec, UncalibratedError
from erasablemask.models.image_checks import check_image_range

__all__ = ["FaceRecognizer"]


class FaceRecognizer(nn.Module):
    """FR model wrapper: ``[-1, 1]`` RGB images in, unit-norm embeddings out.

    Args:
        backbone: the architecture itself (state-dict compatible with the
            public checkpoint where there is one).
        spec: the model's metadata.
        embed: optional function ``(backbone, preprocessed) -> raw embedding``
            for backbones whose forward returns more than the embedding
            (e.g. facenet with its logits layer). Default: ``backbone(x)``.

    Attributes:
        weights_digest: sha256 of the backbone's tensors when built
            (:func:`~erasablemask.models.fr.weights.weights_digest`); None
            for a wrapper made by hand.
        calibration_set: id of the calibration set whose thresholds
            ``spec.thresholds`` holds (None: published thresholds only).
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
        self.weights_digest: str | None = None
        self.calibration_set: str | None = None
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
            f"FR model '{self.spec.name}' has no threshold at FAR {far:g} for these weights "
            f"(known: {sorted(self.spec.thresholds) or 'none'}); run "
            f"`erasablemask fr calibrate {self.spec.name} --pairs PAIRS.csv --images DIR`"
        )
