"""Photos in and out: read with the one loader, crop a face the way the model was trained, paste it back, save clean.

- :func:`read_photo`: the upright RGB image (through
  :func:`~erasablemask.experiments.data.image_io.load_rgb`: EXIF orientation
  applied, alpha composited on white) plus what saving needs from the file
  (format, ICC profile, JPEG quantisation tables and chroma subsampling).
- :func:`find_faces`: the detector's faces, with the refusals a user can act
  on (no face, a face too small for the model, several faces).
- :func:`face_crop`: the FFHQ / CelebA-HQ alignment at the model's resolution
  (:func:`~erasablemask.models.fr.alignment.ffhq_crop_transform`).
- :func:`paste_back`: the processed crop warped back into the full-resolution
  photo through a feathered rounded-square mask; pixels where the mask is 0
  (everything outside the crop's inscribed rounded square) keep their
  original bytes exactly.
- :func:`save_photo`: atomic write in the input's format; no EXIF, GPS,
  XMP or maker notes (nothing of the original's metadata is passed on), the
  ICC profile kept; JPEG re-encoded with the original's quantisation tables
  and subsampling (its quality), PNG/TIFF losslessly, WebP at quality 95;
  formats Pillow cannot write back sensibly (GIF, ...) become PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from erasablemask.experiments.data.image_io import DataSetError, load_rgb, pil_to_tensor
from erasablemask.experiments.photos.detect import DetectedFace, FaceDetector
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.alignment import ffhq_crop_transform, invert_affine, warp_affine

__all__ = [
    "FEATHER",
    "MIN_FACE_FRACTION",
    "Photo",
    "PhotoError",
    "face_crop",
    "feather_mask",
    "find_faces",
    "paste_back",
    "read_photo",
    "save_photo",
]

# Output formats kept as they are; anything else is written as PNG (lossless, keeps ICC).
_KEPT_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
FEATHER = 0.12
"""Width of the mask's soft edge, as a fraction of the crop's half-side (our choice: hides the seam, keeps the face)."""
MIN_FACE_FRACTION = 0.25
"""A face whose box is smaller than this fraction of the model's image side is refused (too little detail to protect)."""


class PhotoError(ValueError):
    """A photo the command cannot process; the message names the photo and the fix."""


@dataclass
class Photo:
    """A decoded photo and what writing it back needs.

    Attributes:
        path: the file.
        image: upright RGB PIL image (EXIF orientation applied).
        format: Pillow's format name of the file (``"JPEG"``, ``"PNG"``, ...).
        icc_profile: the embedded ICC profile bytes, or None.
        save_options: format-specific encoder options that keep the original's quality.
    """

    path: Path
    image: Image.Image
    format: str
    icc_profile: bytes | None = None
    save_options: dict = field(default_factory=dict)

    def tensor(self) -> torch.Tensor:
        """``(3, H, W)`` in [-1, 1]."""
        return pil_to_tensor(self.image)


def read_photo(path: str | Path) -> Photo:
    """Decode ``path`` with the project's one loader and note its format, ICC profile and JPEG quality.

    Raises:
        PhotoError: the file is missing, unreadable or not an image (names the file and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"photo '{path}' does not exist; check the path")
    try:
        image = load_rgb(path)
    except DataSetError as e:
        raise PhotoError(
            f"photo '{path}' cannot be read: {e}. Supported: JPEG, PNG, WebP, TIFF, BMP "
            f"(anything Pillow decodes); re-export it as JPEG or PNG"
        ) from None
    options: dict = {}
    with Image.open(path) as src:
        fmt = src.format or "PNG"
        icc = src.info.get("icc_profile")
        if fmt in ("JPEG", "MPO"):
            from PIL import JpegImagePlugin

            if getattr(src, "quantization", None):
                options["qtables"] = {k: list(v) for k, v in src.quantization.items()}
            sampling = JpegImagePlugin.get_sampling(src)
            if sampling != -1:
                options["subsampling"] = sampling
    return Photo(path, image, fmt, icc or None, options)


def output_suffix(photo: Photo) -> str:
    """The file extension the protected photo gets (the input's, unless its format is not kept)."""
    if photo.format in _KEPT_FORMATS:
        own = photo.path.suffix
        return (
            own
            if own.lower() in {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
            else _KEPT_FORMATS[photo.format]
        )
    return ".png"


def save_photo(photo: Photo, pixels: np.ndarray, out: Path) -> Path:
    """Write ``pixels`` (``(H, W, 3)`` uint8) atomically to ``out`` in ``photo``'s format, without its metadata.

    Only the ICC profile of the original is carried over; no EXIF (so no GPS,
    maker notes or orientation tag: the pixels are already upright), no XMP,
    no comments.
    """
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB")
    fmt = {"MPO": "JPEG"}.get(photo.format, photo.format)
    kwargs: dict = {}
    if photo.icc_profile:
        kwargs["icc_profile"] = photo.icc_profile
    if fmt == "JPEG":
        kwargs.update(photo.save_options or {"quality": 95})
    elif fmt == "WEBP":
        kwargs["quality"] = 95
    elif fmt == "TIFF":
        kwargs["compression"] = "tiff_lzw"
    elif fmt not in _KEPT_FORMATS:
        fmt = "PNG"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        image.save(tmp, format=fmt, **kwargs)
    return out


def find_faces(
    photo: Photo, detector: FaceDetector, *, model_size: int, all_faces: bool = False, face_index: int | None = None
) -> list[DetectedFace]:
    """The faces of ``photo`` to process, left to right, or a refusal that says what to do.

    Args:
        photo: the decoded photo.
        detector: the face detector.
        model_size: the protection model's image side (faces much smaller are refused).
        all_faces: process every face found.
        face_index: process only this face (0 = leftmost), when there are several.

    Raises:
        PhotoError: no face; several faces and neither ``all_faces`` nor ``face_index``;
            ``face_index`` out of range; a chosen face smaller than ``MIN_FACE_FRACTION`` of ``model_size``.
    """
    faces = sorted(detector.detect(photo.image), key=lambda f: f.box[0])
    name = photo.path.name
    if not faces:
        raise PhotoError(
            f"no face found in '{name}' (detector {detector.name}); use a photo where the face is "
            f"visible, frontal and at least {round(MIN_FACE_FRACTION * model_size)} px wide"
        )
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise PhotoError(
                f"'{name}' has {len(faces)} face(s); --face {face_index} is out of range "
                f"(use 0..{len(faces) - 1}, numbered left to right)"
            )
        faces = [faces[face_index]]
    elif len(faces) > 1 and not all_faces:
        boxes = ", ".join(f"#{i} at x={f.box[0]:.0f} ({f.size:.0f} px)" for i, f in enumerate(faces))
        raise PhotoError(
            f"'{name}' shows {len(faces)} faces ({boxes}); protect them all with --all-faces, "
            f"or choose one with --face N"
        )
    min_px = MIN_FACE_FRACTION * model_size
    small = [f for f in faces if f.size < min_px]
    if small:
        raise PhotoError(
            f"the face in '{name}' at x={small[0].box[0]:.0f} is {small[0].size:.0f} px, too small for "
            f"the {model_size} px model (needs >= {min_px:.0f} px); use a larger or closer photo"
        )
    return faces


def face_crop(image: torch.Tensor, face: DetectedFace, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The aligned ``size`` x ``size`` crop of ``face`` (FFHQ / CelebA-HQ recipe) and its photo-to-crop matrix.

    Args:
        image: ``(3, H, W)`` photo in [-1, 1].
        face: a detected face of that photo.
        size: the model's image side.

    Returns:
        ``((3, size, size) in [-1, 1], (2, 3) matrix)``; the border outside the photo is black.
    """
    m = ffhq_crop_transform(face.landmarks, size)
    return warp_affine(image, m, (size, size)), m


def feather_mask(size: int, feather: float = FEATHER) -> torch.Tensor:
    """``(size, size)`` blending weights in [0, 1]: 1 inside a rounded square, 0 at and beyond its edge.

    The rounded square is ``|u|^4 + |v|^4 <= 1`` over the crop's normalised
    coordinates ``u, v`` in [-1, 1]; the weight ramps smoothly (smoothstep)
    from 0 on that curve to 1 at ``1 - feather`` inside it.
    """
    if not 0 < feather < 1:
        raise ValueError(f"feather={feather} must be in (0, 1) (a fraction of the crop's half-side)")
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(c, c, indexing="ij")
    r = (u.abs() ** 4 + v.abs() ** 4) ** 0.25
    t = ((1 - r) / feather).clamp(0, 1)
    return (t * t * (3 - 2 * t)).float()


def paste_back(pixels: np.ndarray, crop: torch.Tensor, matrix: np.ndarray, feather: float = FEATHER) -> np.ndarray:
    """Blend a processed face crop back into the photo.

    Args:
        pixels: the photo, ``(H, W, 3)`` uint8 (not modified).
        crop: the processed crop, ``(3, S, S)`` in [-1, 1].
        matrix: the photo-to-crop matrix :func:`face_crop` returned.
        feather: soft-edge width (:func:`feather_mask`).

    Returns:
        A new ``(H, W, 3)`` uint8 array; pixels outside the mask are the original bytes.
    """
    h, w = pixels.shape[:2]
    size = crop.shape[-1]
    inv = invert_affine(matrix)  # crop -> photo
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1], [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]])
    pts = corners @ inv.T
    x0, y0 = max(0, int(np.floor(pts[:, 0].min()))), max(0, int(np.floor(pts[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 1), min(h, int(np.ceil(pts[:, 1].max())) + 1)
    out = pixels.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    # region pixels -> crop pixels: shift the region's origin to (x0, y0) of the photo
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    region_to_crop = (np.vstack([matrix, [0, 0, 1]]) @ shift)[:2]
    crop_to_region = invert_affine(region_to_crop)
    region = (y1 - y0, x1 - x0)
    face = warp_affine(crop.float(), crop_to_region, region, mode="bicubic")
    mask = warp_affine(feather_mask(size, feather)[None], crop_to_region, region, fill=0.0)[0].clamp(0, 1)
    orig = torch.from_numpy(pixels[y0:y1, x0:x1].astype(np.float32)).permute(2, 0, 1)
    new = (face + 1) * 127.5
    blended = orig + mask * (new - orig)
    block = blended.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    keep = (mask <= 0).numpy()
    block[keep] = pixels[y0:y1, x0:x1][keep]
    out[y0:y1, x0:x1] = block
    return out
