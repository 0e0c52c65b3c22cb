"""The one image loader: files -> RGB tensors, with errors that name the file and the fix.

Training data sets, impersonation targets, face verification and (later)
user photos all load through :func:`load_image_tensor`, so a target photo and
the training photos of a person are treated alike:

0. read the header only and refuse an image of more than
   :data:`MAX_IMAGE_PIXELS` pixels (≈ 13 377², Pillow's own decompression-bomb
   limit) before anything is decoded, naming the file and the fix (shrink it);
1. decode the whole file now (truncation is detected here, naming the file),
   at a reduced scale when the caller needs less (``min_side``, implied by
   ``size``): JPEGs are decoded by libjpeg at 1/2, 1/4 or 1/8 scale (draft
   mode), other formats are box-reduced by an integer factor right after
   decoding, always keeping every side at least :data:`REDUCING_GAP` × the
   side needed (Pillow's ``thumbnail`` default), so memory follows the model's
   input, not the photo, and photos up to twice the needed side load exactly
   as before;
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

import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ModePolicy = Literal["convert", "refuse"]
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Largest image (width x height, from the file's header) the loader decodes: Pillow's own
# DecompressionBombError limit (2 x its default MAX_IMAGE_PIXELS), ≈ 13 377 x 13 377 or 0.5 GB of RGB.
# Face models use at most 512 px, so a larger photo only needs shrinking first.
MAX_IMAGE_PIXELS = 178_956_970
# Reduced decoding keeps every side >= REDUCING_GAP x the side the caller needs (Pillow's thumbnail default).
REDUCING_GAP = 2

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


def _too_large(path: Path, pixels: int | None, size: str, max_pixels: int) -> DataSetError:
    return DataSetError(
        f"image '{path}' is {size} ({f'{pixels:,}' if pixels else 'too many'} pixels), more than the loader's limit of {max_pixels:,} "
        f"pixels (MAX_IMAGE_PIXELS in experiments/data/image_io.py, ≈ {int(max_pixels ** 0.5)}²), which guards "
        f"against decompression bombs; shrink it first (e.g. `convert IN -resize 4096x4096 OUT` or Pillow's "
        f"Image.thumbnail): face models use at most 512 px"
    )


def _decode_reduced(im: Image.Image, min_side: int | None) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale that keeps both sides >= REDUCING_GAP x ``min_side``."""
    if min_side and im.format == "JPEG":
        side = REDUCING_GAP * min_side
        im.draft(None, (side, side))  # libjpeg picks the largest reduction keeping the size >= requested


def _reduce(im: Image.Image, min_side: int | None) -> Image.Image:
    """Box-reduce a decoded image by 2, 4, 8, ..., keeping both sides >= REDUCING_GAP x ``min_side``.

    Only whole boxes are kept (the leftover rows/columns are split between both edges), so the
    reduced image stays centred on the original and a later centre crop sees the same region.
    """
    if not min_side:
        return im
    ratio = min(im.size) // (REDUCING_GAP * min_side)
    if ratio < 2:
        return im
    factor = 1 << (ratio.bit_length() - 1)  # the largest power of two <= ratio, like libjpeg's scales
    w, h = im.size
    left, top = (w % factor) // 2, (h % factor) // 2
    return im.reduce(factor, box=(left, top, left + w - w % factor, top + h - h % factor))


def load_rgb(
    path: str | Path,
    mode_policy: ModePolicy = "convert",
    *,
    min_side: int | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Open and fully decode ``path`` as an upright (EXIF-oriented) RGB PIL image.

    Args:
        path: an image file Pillow reads.
        mode_policy: ``"convert"`` or ``"refuse"`` non-RGB files.
        min_side: the smallest side the caller will shrink the image to (``None``: the
            full resolution is wanted); the image may then be decoded at a reduced scale
            keeping both sides >= ``REDUCING_GAP * min_side`` (module docstring).
        max_pixels: refuse images with more pixels than this, before decoding.

    Raises:
        DataSetError: the file is missing, too large, unreadable, truncated or (with
            ``mode_policy='refuse'``) not RGB; the message names the file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # the size is checked below, with a message that names the file
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise _too_large(path, width * height, f"{width}x{height}", max_pixels)
            _decode_reduced(im, min_side)
            im.load()  # decode now, so truncation is detected here
            upright = ImageOps.exif_transpose(im)  # a new, file-independent image; info (transparency) kept
            return _reduce(to_rgb(upright, path, mode_policy), min_side)
    except FileNotFoundError:
        raise DataSetError(f"image '{path}' does not exist; restore the file or remove its attribute row") from None
    except DataSetError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses in open() above its own limit (= ours by default)
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else None
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise _too_large(path, pixels, "too large", limit) from None
    except UnidentifiedImageError as e:
        raise DataSetError(
            f"image '{path}' cannot be decoded: Pillow does not recognise it as an image ({e}); the file is not an "
            f"image or is corrupt: re-download or re-export it (or remove it and its attribute row from the data set)"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
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
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    mode_policy: ModePolicy = "convert",
    *,
    min_side: int | None = None,
) -> torch.Tensor:
    """Load ``path`` the one way every image of the project is loaded (see the module docstring).

    Args:
        path: an image file Pillow reads.
        size: ``s`` for ``(3, s, s)`` (centre square crop, then bicubic
            antialiased resize), ``(height, width)`` for that size (centre
            crop to its aspect ratio, then the same resize), or ``None`` to
            keep the image's own size and shape.
        mode_policy: ``"convert"`` or ``"refuse"`` non-RGB files.
        min_side: with ``size=None``, the side the caller will shrink the image to
            (an FR model's input): a large photo is then decoded at a reduced scale,
            keeping its aspect and both sides >= ``REDUCING_GAP * min_side``. With a
            ``size`` it is implied (the larger of its sides).

    Returns:
        ``(3, H, W)`` float32 tensor in ``[-1, 1]``, EXIF orientation applied.

    Raises:
        DataSetError: missing, corrupt, too large (:data:`MAX_IMAGE_PIXELS`) or (under
            ``"refuse"``) non-RGB file, naming it.
        ValueError: a size that is not positive.
    """
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if height < 1 or width < 1:
            raise ValueError(f"size={size!r} for image '{path}' must be positive; use an int side, (height, width) "
                             f"or None for the native size")
        min_side = max(height, width)  # the centre crop's shorter side is at least this after reduction
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side={min_side!r} for image '{path}' must be positive (or None: full resolution)")
    im = load_rgb(path, mode_policy, min_side=min_side)
    if size is not None:
        im = center_crop_to_aspect(im, height, width)
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BICUBIC)
    return pil_to_tensor(im)
