"""Decode image files into RGB tensors, with errors that name the file and the fix.

``mode_policy`` decides what happens to non-RGB files: ``"convert"`` turns
them into RGB (transparent images are composited on white, grey-scale and
palette images are expanded, CMYK/YCbCr/LAB/HSV are converted, 16-bit
grey-scale is scaled to 8 bits) and ``"refuse"`` raises ``DataSetError``.
32-bit integer and float images have no agreed range and are always refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

ModePolicy = Literal["convert", "refuse"]
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_MODE_NAMES = {
    "1": "1-bit black and white",
    "L": "8-bit grey-scale",
    "LA": "grey-scale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGB with alpha",
    "RGBX": "RGB with padding",
    "RGBa": "RGB with premultiplied alpha",
    "La": "grey-scale with premultiplied alpha",
    "CMYK": "4-channel CMYK",
    "YCbCr": "YCbCr",
    "LAB": "CIE L*a*b*",
    "HSV": "HSV",
    "I;16": "16-bit grey-scale",
    "I;16B": "16-bit grey-scale",
    "I;16L": "16-bit grey-scale",
    "I;16N": "16-bit grey-scale",
    "I": "32-bit integer",
    "F": "32-bit float",
}


class DataSetError(ValueError):
    """Bad data on disk: the message names the file(s) and how to fix them."""


def check_mode_policy(mode_policy: str) -> None:
    """Raise ValueError unless ``mode_policy`` is 'convert' or 'refuse'."""
    if mode_policy not in ("convert", "refuse"):
        raise ValueError(f"mode_policy={mode_policy!r} is unknown; use 'convert' or 'refuse'")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def to_rgb(im: Image.Image, path: str | Path, mode_policy: ModePolicy = "convert") -> Image.Image:
    """Return ``im`` as an RGB image following ``mode_policy`` (see module docstring)."""
    check_mode_policy(mode_policy)
    if im.mode == "RGB":
        return im
    desc = _MODE_NAMES.get(im.mode, im.mode)
    if im.mode in ("I", "F"):
        raise DataSetError(
            f"image '{path}' is {desc} (mode {im.mode}) with no standard range; save it as 8-bit RGB (PNG or JPEG)"
        )
    if mode_policy == "refuse":
        raise DataSetError(
            f"image '{path}' is {desc} (mode {im.mode}), not RGB; convert it to RGB "
            f"(e.g. PIL Image.convert('RGB')) or pass mode_policy='convert'"
        )
    if im.mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64) / 257.0
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_rgb(path: str | Path, mode_policy: ModePolicy = "convert") -> Image.Image:
    """Open and fully decode ``path`` as an RGB PIL image.

    Raises:
        DataSetError: the file is missing, unreadable, truncated or (with
            ``mode_policy='refuse'``) not RGB; the message names the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncation is detected here
            return to_rgb(im, path, mode_policy).copy()
    except FileNotFoundError:
        raise DataSetError(f"image '{path}' does not exist; restore the file or remove its attribute row") from None
    except DataSetError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataSetError(
            f"image '{path}' cannot be decoded ({type(e).__name__}: {e}); the file is corrupt or truncated: "
            f"re-download or re-export it, or remove it and its attribute row"
        ) from e


def center_square(im: Image.Image) -> Image.Image:
    """Crop the central square of ``im`` (no-op when already square)."""
    w, h = im.size
    if w == h:
        return im
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 tensor in [-1, 1]."""
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def load_image_tensor(path: str | Path, size: int | None = None, mode_policy: ModePolicy = "convert") -> torch.Tensor:
    """Load ``path`` as a (3, size, size) float32 tensor in [-1, 1].

    Non-square images are centre-cropped to a square before resizing (bicubic,
    anti-aliased). With ``size=None`` the image keeps its own size and shape.
    """
    im = load_rgb(path, mode_policy)
    if size is not None:
        im = center_square(im)
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BICUBIC)
    return pil_to_tensor(im)
