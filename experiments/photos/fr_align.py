"""Photos for a real FR model, aligned its makers' way: detect the face, warp it onto the model's template.

``sface`` and ``dlib_resnet`` were trained on aligned faces
(:data:`~erasablemask.models.fr.alignment.ALIGNMENTS`); fed whole photos
they are much worse (``benchmarks/fr_alignment.py`` measures both). This is
the opt-in step that ``fr verify --align``, ``fr calibrate --align`` and the
photo commands use: each photo is decoded with the one loader, its most
confident face detected (MTCNN by default) and warped with the model's
five-point template to the model's input size. A photo where the detector
finds no face is used whole (resized by the model, as without alignment)
and counted, so a calibration set with a few tight crops still calibrates.

Thresholds depend on the preprocessing, so a calibration made with
alignment gets its own calibration-set id (:func:`aligned_set_id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from erasablemask.experiments.data.image_io import pil_to_tensor
from erasablemask.experiments.photos.detect import FaceDetector, build_detector
from erasablemask.experiments.photos.faces import read_photo
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.fr.alignment import align_faces, alignment_for
from erasablemask.models.fr.registry import FaceRecognizer

__all__ = ["AlignedEmbedder", "aligned_set_id"]


def aligned_set_id(calibration_set: str, detector: str = "mtcnn") -> str:
    """The calibration-set id of ``calibration_set`` scored with alignment by ``detector``."""
    return f"{calibration_set}.aligned-{detector}"


@dataclass
class AlignedEmbedder:
    """Embeds image files with one FR model after aligning each face (module docstring).

    Args:
        model: a built FR model with an alignment recipe (``sface``, ``dlib_resnet``).
        detector: the face detector (default: MTCNN, built on first use).

    Attributes:
        whole: the files where no face was found (embedded whole), after :meth:`embed`.
    """

    model: FaceRecognizer
    detector: FaceDetector | None = None

    def __post_init__(self) -> None:
        self.alignment = alignment_for(self.model.spec.name)  # LookupError (with the fix) for other models
        self.whole: list[str] = []

    def load(self, path: str | Path) -> torch.Tensor:
        """The aligned face of ``path``, ``(3, *alignment.size)`` in [-1, 1] (the whole photo resized if no face)."""
        if self.detector is None:
            self.detector = build_detector("mtcnn")
        photo = read_photo(path)
        faces = self.detector.detect(photo.image)
        image = pil_to_tensor(photo.image)[None]
        if not faces:
            self.whole.append(str(path))
            return self.model.crop_and_resize(image)[0]
        return align_faces(image, faces[0].landmarks[None], self.alignment)[0]

    @torch.no_grad()
    def embed(
        self, paths: Sequence[str | Path], *, batch_size: int = 32, progress: bool = True, **_: object
    ) -> torch.Tensor:
        """``(len(paths), embedding_size)`` unit-norm embeddings of the aligned faces (CPU float32)."""
        self.whole = []
        device = next((t.device for t in self.model.parameters()), torch.device("cpu"))  # device-ok: follows the model
        faces = [
            self.load(p) for p in progress_bar(paths, desc=f"align ({self.model.spec.name})", disable=not progress)
        ]
        out = torch.empty(len(faces), self.model.spec.embedding_size)
        for start in range(0, len(faces), batch_size):
            batch = torch.stack(faces[start : start + batch_size]).to(device)
            out[start : start + len(batch)] = self.model(batch).float().cpu()
        return out


def calibrated_for_alignment(model: FaceRecognizer, *, aligned: bool, detector: str = "mtcnn") -> FaceRecognizer:
    """Give ``model`` the thresholds calibrated here with (or without) alignment, in place.

    Among the calibration sets of the model's weights, those whose id ends in
    ``.aligned-<detector>`` (``aligned=True``) or has no ``.aligned-`` part
    (``aligned=False``) count; exactly one is applied, none leaves the
    published thresholds.

    Raises:
        LookupError: several sets qualify (the message lists them and the fix).
    """
    from erasablemask.models.fr.calibrations import list_calibrations, with_calibration

    suffix = aligned_set_id("", detector)
    found = [
        r
        for r in list_calibrations(model.spec.name, model.weights_digest)
        if r["calibration_set"].endswith(suffix) == aligned and (aligned or ".aligned-" not in r["calibration_set"])
    ]
    if len(found) > 1:
        raise LookupError(
            f"FR model '{model.spec.name}' has {len(found)} calibration sets "
            f"{'with' if aligned else 'without'} alignment "
            f"({', '.join(r['calibration_set'] for r in found)}); pass --calibration ID"
        )
    if found:
        model.spec = with_calibration(model.spec, found[0])
        model.calibration_set = found[0]["calibration_set"]
    return model
