"""The paper's preprocessing of raw face photos, one batch at a time: detect, align, crop, write (no Ray here).

§V-A: "we first use MTCNN to extract and preprocess the facial regions" of
CelebA-HQ / FFHQ. :class:`PrepareFaces` is that step for a batch of image
paths: each photo is decoded with the one loader, its faces are detected,
a photo with exactly one face is cropped with the FFHQ / CelebA-HQ alignment
(:func:`~erasablemask.experiments.photos.faces.face_crop`) to ``size`` x
``size`` and written as PNG into its shard folder; every photo gives one
row of metadata (status, reason, score, landmarks, crop box). A bad photo is
a row with ``status="bad"`` and a reason, never an exception.

It is a callable class so that Ray Data's actor pool
(:mod:`erasablemask.platform.data_prepare`) loads the detector once per
actor; it runs the same way in one process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from erasablemask.experiments.photos.detect import build_detector
from erasablemask.experiments.photos.faces import PhotoError, face_crop, read_photo
from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.alignment import invert_affine

__all__ = ["BAD_REASONS", "SHARD_SIZE", "PrepareFaces", "crop_name"]

BAD_REASONS = ("unreadable", "no_face", "several_faces", "too_small")
_FLOAT_VECTORS = {"landmarks": 10, "crop_landmarks": 10, "crop_box": 8}  # per row: 5 points, 5 points, 4 corners
SHARD_SIZE = 1000
"""Crops per shard folder (``images/00000/``, ``images/01000/``, ... as FFHQ's own layout)."""


def crop_name(index: int) -> str:
    """The crop's path below the output folder for input number ``index``."""
    return f"images/{index // SHARD_SIZE * SHARD_SIZE:05d}/{index:05d}.png"


class PrepareFaces:
    """Detect, align, crop and write a batch of photos (a Ray Data ``map_batches`` callable class).

    Args:
        out_dir: the prepared folder (crops go to ``images/<shard>/``).
        size: crop side in pixels (256: the paper's).
        detector: ``"mtcnn"`` (the paper's) or ``"yunet"``.
        min_score: detector confidence threshold.
        min_face: faces whose box is smaller than this many pixels are ``too_small``.
    """

    def __init__(
        self, out_dir: str, size: int = 256, detector: str = "mtcnn", min_score: float = 0.9, min_face: float = 0.0
    ) -> None:
        import torch

        torch.set_num_threads(1)  # one actor per core
        self.out_dir, self.size, self.min_face = Path(out_dir), int(size), float(min_face)
        self.detector = build_detector(detector, min_score=min_score)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self._one(int(i), str(p)) for i, p in zip(batch["index"], batch["path"])]
        out = {}
        for k in rows[0]:
            values = [r[k] for r in rows]
            if k in _FLOAT_VECTORS:  # fixed-length float columns (NaN for bad photos): Ray Data's tensor type
                out[k] = np.array(values, dtype=np.float64).reshape(len(rows), _FLOAT_VECTORS[k])
            elif isinstance(values[0], str):
                out[k] = np.array(values, dtype=object)
            else:
                out[k] = np.array(values)
        return out

    def _one(self, index: int, path: str) -> dict:
        row = {
            "index": index,
            "source": path,
            "status": "bad",
            "reason": "",
            "detail": "",
            "path": "",
            "score": float("nan"),
            "n_faces": 0,
            **{k: [float("nan")] * n for k, n in _FLOAT_VECTORS.items()},
            "width": 0,
            "height": 0,
        }
        try:
            photo = read_photo(path)
        except PhotoError as e:
            return {**row, "reason": "unreadable", "detail": str(e)}
        row["width"], row["height"] = photo.image.size
        faces = self.detector.detect(photo.image)
        row["n_faces"] = len(faces)
        if not faces:
            return {**row, "reason": "no_face", "detail": f"detector {self.detector.name} found no face"}
        if len(faces) > 1:
            return {**row, "reason": "several_faces", "detail": f"{len(faces)} faces; keep photos of one person"}
        face = faces[0]
        if face.size < self.min_face:
            return {**row, "reason": "too_small", "detail": f"face {face.size:.0f} px < {self.min_face:.0f} px"}
        crop, m = face_crop(photo.tensor(), face, self.size)
        rel = crop_name(index)
        pixels = ((crop + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        out = self.out_dir / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Image.fromarray(pixels, mode="RGB").save(tmp, format="PNG")
        s = float(self.size)
        corners = np.array([[-0.5, -0.5, 1], [s - 0.5, -0.5, 1], [s - 0.5, s - 0.5, 1], [-0.5, s - 0.5, 1]])
        box = corners @ invert_affine(m).T  # the crop's corners in the photo: tl, tr, br, bl
        crop_lm = face.landmarks @ m[:, :2].T + m[:, 2]
        return {
            **row,
            "status": "ok",
            "path": rel,
            "score": face.score,
            "landmarks": face.landmarks.ravel().tolist(),
            "crop_landmarks": crop_lm.ravel().tolist(),
            "crop_box": box.ravel().tolist(),
        }
