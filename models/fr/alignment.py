"""Face alignment from five landmarks: similarity transforms, templates and a differentiable warp.

Real FR models were trained on faces aligned by their makers' own recipe; fed
a whole photo resized to their input they score far worse (``sface`` ROC AUC
0.87 against 0.999 on ``../shared/faces``). This module holds the geometric
part of those recipes as pure tensor functions (no detector here: the
landmarks come from the caller, e.g. :mod:`erasablemask.experiments.photos.detect`).

Landmarks are five ``(x, y)`` points in pixel coordinates of the photo, in
the order MTCNN and YuNet both give them: the eye on the image's left, the
eye on the image's right, the nose tip, the mouth corner on the image's
left, the mouth corner on the image's right. Pixel coordinates follow
OpenCV's convention (pixel ``(i, j)`` has its centre at ``x=j, y=i``).

Templates (where the five points go in the aligned crop):

- ``sface``: OpenCV's ``FaceRecognizerSF::alignCrop`` (opencv
  ``modules/objdetect/src/face_recognize.cpp``), the ArcFace 112x112 template
  of insightface, fitted with a least-squares similarity transform and warped
  bilinearly with a black border, as ``alignCrop`` does.
- ``dlib_resnet``: dlib's ``get_face_chip(img, shape, size=150, padding=0.25)``
  maps dlib's own five points (four eye corners and the base of the nose)
  onto a fixed template; MTCNN's points are other points of the face (eye
  centres, nose *tip*, mouth corners), so the template below is where they
  land inside dlib's chip: the median over the 138 labelled photos of
  ``../shared/faces`` (with one dlib face) of the MTCNN landmarks mapped through dlib's own chip
  transform (dlib's frontal detector and ``shape_predictor_5_face_landmarks``,
  ``dlib.get_face_chip_details(shape, 150, 0.25)``), computed by
  ``benchmarks/derive_dlib_template.py``.

The same functions give the crop the protection model works on
(:func:`ffhq_crop_transform`: the FFHQ / CelebA-HQ recipe, a square oriented
by the eyes and the mouth), so that photos are aligned the way the training
faces were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ALIGNMENTS",
    "Alignment",
    "align_faces",
    "alignment_for",
    "ffhq_crop_transform",
    "similarity_transform",
    "warp_affine",
]


@dataclass(frozen=True)
class Alignment:
    """A five-point alignment recipe: where the landmarks go in a ``size`` crop.

    Attributes:
        name: the FR model (registry name) the recipe belongs to.
        size: ``(height, width)`` of the aligned crop (the model's input size).
        template: ``(5, 2)`` target points in crop pixels, landmark order of the module docstring.
        source: where the template comes from.
    """

    name: str
    size: tuple[int, int]
    template: tuple[tuple[float, float], ...]
    source: str

    def transform(self, landmarks: np.ndarray) -> np.ndarray:
        """The ``(2, 3)`` photo-to-crop matrix for ``landmarks`` (``(5, 2)`` photo pixels)."""
        return similarity_transform(np.asarray(landmarks, dtype=np.float64), np.asarray(self.template))


SFACE_ALIGNMENT = Alignment(
    name="sface",
    size=(112, 112),
    template=((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)),
    source="OpenCV FaceRecognizerSF::alignCrop (face_recognize.cpp): the ArcFace 112x112 template",
)

# MTCNN's five points inside dlib's 150x150 chip with padding 0.25: the median over the 138 labelled photos of
# ../shared/faces where dlib finds one face (benchmarks/derive_dlib_template.py prints these numbers; the
# interquartile ranges are 2 px for the eyes, 4-7 px for the nose and mouth).
DLIB_ALIGNMENT = Alignment(
    name="dlib_resnet",
    size=(150, 150),
    template=((47.27, 45.50), (101.64, 45.46), (74.47, 78.36), (50.96, 101.92), (99.53, 101.85)),
    source="dlib get_face_chip(size=150, padding=0.25) geometry, MTCNN points mapped through dlib's 5-point "
    "chip transform on ../shared/faces (median; benchmarks/derive_dlib_template.py)",
)

ALIGNMENTS: dict[str, Alignment] = {a.name: a for a in (SFACE_ALIGNMENT, DLIB_ALIGNMENT)}
"""The FR models that have their makers' alignment here, by registry name."""


def alignment_for(model: str) -> Alignment:
    """The alignment recipe of FR model ``model``.

    Raises:
        LookupError: the model has no alignment recipe here (it takes whole, pre-cropped faces).
    """
    if model not in ALIGNMENTS:
        raise LookupError(
            f"FR model '{model}' has no landmark alignment here (known: {sorted(ALIGNMENTS)}); "
            f"use it without --align (it takes the face crop as given)"
        )
    return ALIGNMENTS[model]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking ``src`` points to ``dst`` (Umeyama 1991).

    Args:
        src: ``(K, 2)`` points, K >= 2.
        dst: ``(K, 2)`` points.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ≈ M @ [x, y, 1]``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(
            f"similarity_transform needs two (K, 2) point arrays with K >= 2; got {src.shape}, {dst.shape}"
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("similarity_transform: the source points coincide; landmarks are degenerate")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def ffhq_crop_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The photo-to-crop matrix of the FFHQ / CelebA-HQ alignment, for a ``size`` square crop.

    The recipe of FFHQ's ``recreate_aligned_images`` (NVlabs/ffhq-dataset,
    ``download_ffhq.py``), which CelebA-HQ's crops follow closely: a square
    centred a tenth of the way from the eyes to the mouth, oriented by the
    eye line and the eye-to-mouth line, with side ``max(4 x eye distance,
    3.6 x eye-to-mouth distance)``.

    Args:
        landmarks: ``(5, 2)`` photo pixels (module docstring order).
        size: side of the crop in pixels.

    Returns:
        ``(2, 3)`` similarity matrix, photo pixels -> crop pixels.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_l, eye_r, mouth_l, mouth_r = lm[0], lm[1], lm[3], lm[4]
    eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm == 0:
        raise ValueError("ffhq_crop_transform: degenerate landmarks (eyes and mouth coincide)")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # top-left, bottom-left, bottom-right, top-right
    s = float(size)
    corners = np.array([[-0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5], [s - 0.5, -0.5]])
    return similarity_transform(quad, corners)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine matrix."""
    full = np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(
    image: torch.Tensor, matrix: np.ndarray, size: tuple[int, int], *, mode: str = "bilinear", fill: float = -1.0
) -> torch.Tensor:
    """``cv2.warpAffine`` in torch: the ``size`` crop that ``matrix`` maps ``image`` onto, differentiably.

    Shrinking by more than 2x first reduces the image with an antialiased
    resize, so the crop does not alias (bilinear sampling alone would).

    Args:
        image: ``(3, H, W)`` or ``(N, 3, H, W)`` in [-1, 1] (one matrix for the whole batch).
        matrix: ``(2, 3)`` source pixels -> output pixels (OpenCV pixel-centre convention).
        size: ``(height, width)`` of the output.
        mode: ``grid_sample`` interpolation ('bilinear' or 'bicubic'; bicubic output is clamped to [-1, 1]).
        fill: value outside the source (-1: black, as OpenCV's constant border).

    Returns:
        The warped image(s), same leading shape as ``image``.
    """
    single = image.ndim == 3
    x = image[None] if single else image
    h_in, w_in = x.shape[-2:]
    inv = invert_affine(matrix)  # output pixels -> source pixels
    scale = math.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:, :2])))  # output px per source px
    if scale < 0.5:
        factor = 1.0 / (2.0 * scale)  # reduce to twice the output's sampling density
        new_h, new_w = max(1, round(h_in / factor)), max(1, round(w_in / factor))
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        sx, sy = new_w / w_in, new_h / h_in  # pixel centres: x' = (x + 0.5) * s - 0.5
        pre = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        inv = (pre @ np.vstack([inv, [0.0, 0.0, 1.0]]))[:2]
        h_in, w_in = new_h, new_w
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    inv_t = torch.from_numpy(inv)
    src_x = inv_t[0, 0] * xs + inv_t[0, 1] * ys + inv_t[0, 2]
    src_y = inv_t[1, 0] * xs + inv_t[1, 1] * ys + inv_t[1, 2]
    grid = torch.stack([(2 * src_x + 1) / w_in - 1, (2 * src_y + 1) / h_in - 1], dim=-1)
    grid = grid.to(dtype=x.dtype, device=x.device)[None].expand(x.shape[0], h, w, 2)
    out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    if mode == "bicubic":
        out = out.clamp(-1.0, 1.0)
    return out[0] if single else out


def align_faces(images: torch.Tensor, landmarks: np.ndarray, alignment: Alignment) -> torch.Tensor:
    """Aligned crops for one FR model: one per (image, landmarks) pair, differentiably.

    Args:
        images: ``(N, 3, H, W)`` in [-1, 1] (the photos, or face crops with landmarks in crop pixels).
        landmarks: ``(N, 5, 2)`` pixel coordinates in each image.
        alignment: the model's recipe (:data:`ALIGNMENTS`).

    Returns:
        ``(N, 3, *alignment.size)`` in [-1, 1].
    """
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    if len(landmarks) != images.shape[0]:
        raise ValueError(
            f"align_faces: {images.shape[0]} images but {len(landmarks)} landmark sets; pass one per image"
        )
    return torch.stack([warp_affine(im, alignment.transform(lm), alignment.size) for im, lm in zip(images, landmarks)])
