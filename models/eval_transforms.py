"""Evaluation transforms of Table V, applied the way a real platform would (§V-E).

Each transform is a callable ``t(x, *, seed) -> Tensor``: ``x`` and the result
are ``(N, 3, H, W)`` in ``[-1, 1]`` on ``x``'s device and dtype. They are not
differentiable (no gradient flows) and they work on 8-bit images, as a photo
platform does: the input is rounded to uint8, processed with PIL, and the
result is 8-bit as well (``"none"`` is the exact identity). The same seed gives
the same output; draws are made in batch order (image ``i`` of a batch uses
the ``i``-th draw), so pass the same batches with the same seed to reproduce.

Registered by name in :data:`EVAL_TRANSFORMS` (name -> factory) so evaluation
configs list them; :func:`build_eval_transform` builds one with options:

==============  ==============================================================
``none``        identity
``jpeg``        real JPEG bytes through PIL (encode + decode), ``quality=50``
``gaussian``    additive N(0, var) noise, ``variance=0.003`` in ``units="[0,1]"``
                (pixel values scaled to [0, 1]); clipped, then 8-bit
``resize``      ``factor=0.5`` down then back up (PIL bilinear, antialiased down)
``median``      median filter, ``kernel=5`` (per channel, PIL)
``rotate``      rotation by an angle ~ U[-30°, 30°] per image (``max_degrees=30``),
                bilinear, corners filled black, same size (no expand)
``center_crop`` central crop of ``size=224`` at ``reference=256``, scaled to the
                image size otherwise (round(224·H/256)), then resized back to
                H x W (bilinear) so downstream models see the input size
==============  ==============================================================
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor

from erasablemask.models.image_checks import check_image_range

__all__ = [
    "EvalTransform", "EVAL_TRANSFORMS", "register_eval_transform", "build_eval_transform",
    "to_uint8", "from_uint8", "real_jpeg", "VARIANCE_UNITS", "std_in_model_units",
]

# How many [-1, 1] units one unit of each pixel scale is: a variance given in
# these units becomes std = sqrt(var) * scale in the model's [-1, 1] range.
VARIANCE_UNITS = {"[0,1]": 2.0, "[-1,1]": 1.0, "[0,255]": 2.0 / 255.0}


def std_in_model_units(variance: float, units: str) -> float:
    """Standard deviation in [-1, 1] pixel units of a noise ``variance`` stated in ``units``."""
    if units not in VARIANCE_UNITS:
        raise ValueError(f"`variance_units` must be one of {sorted(VARIANCE_UNITS)}; got {units!r}")
    if variance < 0:
        raise ValueError(f"`variance` must be >= 0; got {variance}")
    return math.sqrt(variance) * VARIANCE_UNITS[units]


class EvalTransform(Protocol):
    def __call__(self, x: Tensor, *, seed: int) -> Tensor: ...


def to_uint8(x: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 array (N, H, W, 3), rounded to the nearest level."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(arr: np.ndarray, like: Tensor) -> Tensor:
    """uint8 array (N, H, W, 3) -> (N, 3, H, W) in [-1, 1] with ``like``'s device and dtype."""
    t = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return t.to(device=like.device, dtype=like.dtype)


def _per_image(x: Tensor, fn: Callable[[int, Image.Image], Image.Image]) -> Tensor:
    arr = to_uint8(x)
    out = np.stack([np.asarray(fn(i, Image.fromarray(img)).convert("RGB")) for i, img in enumerate(arr)])
    return from_uint8(out, x)


def real_jpeg(x: Tensor, quality: int = 50) -> Tensor:
    """Real JPEG: 8-bit images encoded to JPEG bytes by PIL (libjpeg, 4:2:0) and decoded. No gradient."""
    def codec(_: int, img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        return Image.open(buf)

    return _per_image(x, codec)


EVAL_TRANSFORMS: dict[str, Callable[..., EvalTransform]] = {}


def register_eval_transform(name: str) -> Callable[[Callable[..., EvalTransform]], Callable[..., EvalTransform]]:
    """Decorator: register a factory ``(**options) -> EvalTransform`` under ``name``."""
    def deco(factory: Callable[..., EvalTransform]) -> Callable[..., EvalTransform]:
        if name in EVAL_TRANSFORMS:
            raise ValueError(f"evaluation transform {name!r} is registered twice")
        EVAL_TRANSFORMS[name] = factory
        return factory

    return deco


def build_eval_transform(name: str, **kw: object) -> EvalTransform:
    """The evaluation transform registered as ``name``, built with options ``kw``."""
    if name not in EVAL_TRANSFORMS:
        raise ValueError(f"unknown evaluation transform {name!r}; choose from {sorted(EVAL_TRANSFORMS)}")
    return EVAL_TRANSFORMS[name](**kw)


def _checked(fn: Callable[[Tensor, int], Tensor]) -> EvalTransform:
    def transform(x: Tensor, *, seed: int) -> Tensor:
        check_image_range(x, "x")
        with torch.no_grad():
            return fn(x, int(seed))

    return transform


@register_eval_transform("none")
def no_transform() -> EvalTransform:
    return _checked(lambda x, seed: x.clone())


@register_eval_transform("jpeg")
def jpeg(*, quality: int = 50) -> EvalTransform:
    return _checked(lambda x, seed: real_jpeg(x, quality))


@register_eval_transform("gaussian")
def gaussian(*, variance: float = 0.003, units: str = "[0,1]") -> EvalTransform:
    std = std_in_model_units(variance, units)

    def fn(x: Tensor, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
        return from_uint8(to_uint8(x + std * noise), x)

    return _checked(fn)


@register_eval_transform("resize")
def resize(*, factor: float = 0.5) -> EvalTransform:
    if not 0 < factor <= 1:
        raise ValueError(f"resize `factor` must be in (0, 1]; got {factor}")

    def fn(x: Tensor, seed: int) -> Tensor:
        h, w = x.shape[-2:]
        small = (max(1, round(w * factor)), max(1, round(h * factor)))
        return _per_image(x, lambda i, im: im.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))

    return _checked(fn)


@register_eval_transform("median")
def median(*, kernel: int = 5) -> EvalTransform:
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"median `kernel` must be a positive odd integer; got {kernel}")
    return _checked(lambda x, seed: _per_image(x, lambda i, im: im.filter(ImageFilter.MedianFilter(kernel))))


@register_eval_transform("rotate")
def rotate(*, max_degrees: float = 30.0) -> EvalTransform:
    def fn(x: Tensor, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        angles = (torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 2 - 1) * max_degrees
        return _per_image(x, lambda i, im: im.rotate(float(angles[i]), resample=Image.BILINEAR, fillcolor=(0, 0, 0)))

    return _checked(fn)


@register_eval_transform("center_crop")
def center_crop(*, size: int = 224, reference: int = 256) -> EvalTransform:
    if not 0 < size <= reference:
        raise ValueError(f"center_crop needs 0 < size <= reference; got size={size}, reference={reference}")

    def fn(x: Tensor, seed: int) -> Tensor:
        h, w = x.shape[-2:]
        ch, cw = max(1, round(size * h / reference)), max(1, round(size * w / reference))
        top, left = (h - ch) // 2, (w - cw) // 2
        box = (left, top, left + cw, top + ch)
        return _per_image(x, lambda i, im: im.crop(box).resize((w, h), Image.BILINEAR))

    return _checked(fn)
