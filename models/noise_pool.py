"""The training noise pool of §IV-D, differentiable, and the evaluation transforms' registry.

After ``x_adv`` is generated, one noise layer, sampled per mini-batch or per
image, is applied before the FR losses and the restorer (§IV-D): JPEG at
QF 50, Gaussian noise of variance 0.003, resize by 1/4 and back, and the
identity. Images are ``(N, 3, H, W)`` in ``[-1, 1]``; outputs are clipped to it.

Layers (registered by name in :data:`TRAINING_NOISE`, name -> factory):

- ``identity``.
- ``jpeg``: ``mode="kornia"`` is kornia's differentiable JPEG
  (``kornia.enhance.jpeg_codec_differentiable``, Reich et al. 2024);
  ``mode="straight_through"`` runs real JPEG (PIL bytes, like the evaluation
  transform) in the forward pass and passes the gradient through unchanged
  (identity surrogate) in the backward pass.
- ``gaussian``: ``x + N(0, var)`` with ``var`` stated in ``units``; by
  default ``"[0,1]"``, i.e. a variance of pixel values scaled to [0, 1]
  (std 0.0548 there, 0.1095 in the model's [-1, 1] units).
- ``resize``: bilinear, antialiased down by ``factor`` (1/4), bilinear back up.

The evaluation transforms (Table V) live in
:mod:`erasablemask.models.eval_transforms` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from erasablemask.models.eval_transforms import (
    EVAL_TRANSFORMS,
    build_eval_transform,
    real_jpeg,
    std_in_model_units,
)
from erasablemask.models.image_checks import check_image_range

__all__ = [
    "TRAINING_NOISE", "EVAL_TRANSFORMS", "build_eval_transform", "TrainingNoisePool",
    "Identity", "DifferentiableJPEG", "GaussianNoise", "ResizeBack",
]

TRAINING_NOISE: dict[str, Callable[..., nn.Module]] = {}


def register_training_noise(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a noise layer ``cls(**options)`` under ``name``."""
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in TRAINING_NOISE:
            raise ValueError(f"training noise {name!r} is registered twice")
        TRAINING_NOISE[name] = cls
        return cls

    return deco


@register_training_noise("identity")
class Identity(nn.Module):
    """No processing."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


@register_training_noise("jpeg")
class DifferentiableJPEG(nn.Module):
    """JPEG at ``quality`` (QF 50 in the paper) with a gradient; ``mode`` "kornia" or "straight_through"."""

    def __init__(self, *, quality: int = 50, mode: Literal["kornia", "straight_through"] = "kornia") -> None:
        super().__init__()
        if mode not in ("kornia", "straight_through"):
            raise ValueError(f"`jpeg_mode` must be 'kornia' or 'straight_through'; got {mode!r}")
        if not 1 <= quality <= 100:
            raise ValueError(f"`jpeg_quality` must be in [1, 100]; got {quality}")
        self.quality = int(quality)
        self.mode = mode

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.mode == "straight_through":
            return x + (real_jpeg(x, self.quality) - x).detach()
        q = torch.tensor([float(self.quality)], device=x.device, dtype=x.dtype)
        y = kornia.enhance.jpeg_codec_differentiable((x + 1) / 2, q)
        return (y * 2 - 1).clamp(-1, 1)


@register_training_noise("gaussian")
class GaussianNoise(nn.Module):
    """Additive Gaussian noise of ``variance`` in ``units`` ("[0,1]", "[-1,1]" or "[0,255]"), clipped."""

    def __init__(self, *, variance: float = 0.003, units: str = "[0,1]") -> None:
        super().__init__()
        self.std = std_in_model_units(variance, units)  # in the model's [-1, 1] units

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        return (x + self.std * noise).clamp(-1, 1)


@register_training_noise("resize")
class ResizeBack(nn.Module):
    """Downscale by ``factor`` (bilinear, antialiased) and upscale back to the input size (bilinear)."""

    def __init__(self, *, factor: float = 0.25) -> None:
        super().__init__()
        if not 0 < factor <= 1:
            raise ValueError(f"`resize_factor` must be in (0, 1]; got {factor}")
        self.factor = float(factor)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        h, w = x.shape[-2:]
        small = (max(1, round(h * self.factor)), max(1, round(w * self.factor)))
        y = F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)


class TrainingNoisePool(nn.Module):
    """The noise pool (§IV-D): one layer of ``layers`` applied per mini-batch or per image, uniformly sampled.

    Args:
        jpeg_quality: JPEG quality factor (paper: 50).
        jpeg_mode: "kornia" (differentiable codec) or "straight_through" (real JPEG forward, identity backward).
        gaussian_variance: noise variance (paper: 0.003) in ``variance_units``.
        variance_units: "[0,1]" (default; pixel values scaled to [0, 1]), "[-1,1]" or "[0,255]".
        resize_factor: down-scaling factor before scaling back (paper: 1/4 in training).
        layers: names from :data:`TRAINING_NOISE` to sample from, identity included by default.
        per: "batch" (one layer per call) or "image" (one layer per image).

    ``forward(x, generator=None)``: ``x`` (N, 3, H, W) in [-1, 1]; ``generator``
    (optional ``torch.Generator``) drives the choice of layers and the noise.
    The names chosen by the last call are kept in ``self.last_choice``.
    """

    def __init__(
        self,
        *,
        jpeg_quality: int = 50,
        jpeg_mode: Literal["kornia", "straight_through"] = "kornia",
        gaussian_variance: float = 0.003,
        variance_units: str = "[0,1]",
        resize_factor: float = 0.25,
        layers: Sequence[str] = ("identity", "jpeg", "gaussian", "resize"),
        per: Literal["batch", "image"] = "batch",
    ) -> None:
        super().__init__()
        if per not in ("batch", "image"):
            raise ValueError(f"`per` must be 'batch' or 'image'; got {per!r}")
        unknown = [name for name in layers if name not in TRAINING_NOISE]
        if unknown or not layers:
            raise ValueError(f"`layers` must be a non-empty list from {sorted(TRAINING_NOISE)}; got {list(layers)}")
        options = {
            "jpeg": dict(quality=jpeg_quality, mode=jpeg_mode),
            "gaussian": dict(variance=gaussian_variance, units=variance_units),
            "resize": dict(factor=resize_factor),
        }
        self.names = list(layers)
        self.per = per
        self.noise_layers = nn.ModuleList(TRAINING_NOISE[name](**options.get(name, {})) for name in self.names)
        self.last_choice: list[str] = []

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_image_range(x, "x_adv")
        device = generator.device if generator is not None else x.device
        n_draws = 1 if self.per == "batch" else x.shape[0]
        choice = torch.randint(len(self.names), (n_draws,), generator=generator, device=device).cpu()
        self.last_choice = [self.names[int(k)] for k in choice]
        if self.per == "batch":
            return self.noise_layers[int(choice[0])](x, generator)
        out = torch.zeros_like(x)
        for k, layer in enumerate(self.noise_layers):
            ids = (choice == k).nonzero().flatten().to(x.device)
            if ids.numel():
                out = out.index_copy(0, ids, layer(x.index_select(0, ids), generator))
        return out
