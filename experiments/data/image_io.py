"""The one image loader: files -> RGB tensors, with errors that name the file and the fix.

Training data sets, impersonation targets, face verification and (later)
user photos all load through :func:`load_image_tensor`, so a target photo and
the training photos of a person are treated alike:

1. decode the whole file now (truncation is detected here, naming the file);
2. apply the EXIF orientation (``ImageOps.exif_transpose``), so an image is
   used the way a viewer shows it; no other EXIF data is used;
3. convert to RGB following ``mode_policy``: ``"convert"`` turns non-RGB
   files into RGB (transparent images are composited on white, grey-scale
   and palette images are expanded, CMYK/YCbCr/LAB/HSV are converted, 16-bit
   grey-scale is scaled to 8 bits) and ``"refuse"`` raises ``DataSetError``;
   32-bit integer and float images have no agreed range and are always refused;
4. with a requested size, crop the largest centred region of the requested
   aspect ratio (a centre square for an ``int`` size) and resize it with
   Pillow's bicubic filter, which is antialiased when shrinking; with
   ``size=None`` the image keeps its own size and shape (FR models resize
   themselves);
5. return ``(3, H, W)`` float32 in ``[-1, 1]`` (``x / 127.5 - 1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

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
    """Open and fully decode ``path`` as an upright (EXIF-oriented) RGB PIL image.

    Raises:
        DataSetError: the file is missing, unreadable, truncated or (with
            ``mode_policy='refuse'``) not RGB; the message names the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncation is detected here
            upright = ImageOps.exif_transpose(im)  # a new, file-independent image; info (transparency) kept
            return to_rgb(upright, path, mode_policy)
    except FileNotFoundError:
        raise DataSetError(f"image '{path}' does not exist; restore the file or remove its attribute row") from None
    except DataSetError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataSetError(
            f"image '{path}' cannot be decoded ({type(e).__name__}: {e}); the file is corrupt or truncated: "
            f"re-download or re-export it (or remove it and its attribute row from the data set)"
        ) from e


def center_crop_to_aspect(im: Image.Image, height: int, width: int) -> Image.Image:
    """The largest centred region of ``im`` with aspect ``width / height`` (a centre square when equal).

    No-op when ``im`` already has that aspect; odd leftovers go to the right/bottom.
    """
    w, h = im.size
    if w * height > h * width:  # too wide: keep the full height
        cw, ch = min(w, round(h * width / height)), h
    else:  # too tall (or exact): keep the full width
        cw, ch = w, min(h, round(w * height / width))
    if (cw, ch) == (w, h):
        return im
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 tensor in [-1, 1]."""
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def load_image_tensor(
    path: str | Path, size: int | tuple[int, int] | None = None, mode_policy: ModePolicy = "convert"
) -> torch.Tensor:
    """Load ``path`` the one way every image of the project is loaded (see the module docstring).

    Args:
        path: an image file Pillow reads.
        size: ``s`` for ``(3, s, s)`` (centre square crop, then bicubic
            antialiased resize), ``(height, width)`` for that size (centre
            crop to its aspect ratio, then the same resize), or ``None`` to
            keep the image's own size and shape.
        mode_policy: ``"convert"`` or ``"refuse"`` non-RGB files.

    Returns:
        ``(3, H, W)`` float32 tensor in ``[-1, 1]``, EXIF orientation applied.

    Raises:
        DataSetError: missing, corrupt or (under ``"refuse"``) non-RGB file, naming it.
        ValueError: a size that is not positive.
    """
    im = load_rgb(path, mode_policy)
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if height < 1 or width < 1:
            raise ValueError(f"size={size!r} for image '{path}' must be positive; use an int side, (height, width) "
                             f"or None for the native size")
        im = center_crop_to_aspect(im, height, width)
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BICUBIC)
    return pil_to_tensor(im)
