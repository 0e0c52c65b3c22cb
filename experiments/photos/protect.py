"""Protect and erase whole photos: detect, align, run a :class:`Protection`, paste back, save, verify.

The user's side (``protect``): every chosen face of a photo is cropped the
way the model was trained (:func:`~erasablemask.experiments.photos.faces.face_crop`),
protected at the model's resolution with ``Protection.protect``, and pasted
back into the full-resolution photo through a feathered mask; the photo is
saved without its metadata (ICC kept). The trusted authority's side
(``erase``) does the same with ``Protection.erase``.

Attributes: the source attributes ``att_a`` of a real face are unknown, so
they are read from the run's AttGAN discriminator (its attribute head D_att,
logit > 0 means present); the requested attributes ``att_b`` are ``att_a``
with the user's edits (``{"Eyeglasses": 1}``), no edit by default. Our
choice; the paper's scenario has the user pick the edit.

Verification (per face, per FR model named): the cosine between the face in
the *written* photo (decoded again, so the file's JPEG coding counts) and a
reference (the target, or the person's own clean face), and the decision at
the model's threshold at ``far``. Models with a landmark alignment
(:data:`~erasablemask.models.fr.alignment.ALIGNMENTS`: ``sface``,
``dlib_resnet``) see the face aligned their makers' way from the detector's
landmarks; other models see the protection crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from erasablemask.experiments.data.attributes import ATTRIBUTES
from erasablemask.experiments.data.image_io import IMAGE_EXTENSIONS
from erasablemask.experiments.evaluation.protection import Protection
from erasablemask.experiments.photos.detect import DetectedFace, FaceDetector
from erasablemask.experiments.photos.faces import (
    FEATHER,
    PhotoError,
    face_crop,
    find_faces,
    output_suffix,
    paste_back,
    read_photo,
    save_photo,
)
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.fr.alignment import ALIGNMENTS, align_faces
from erasablemask.models.fr.registry import FaceRecognizer, UncalibratedError

__all__ = ["FaceCheck", "PhotoJob", "PhotoResult", "Reference", "list_photos", "parse_attribute_edits", "run_photos"]


def list_photos(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs`` (files, and the images directly or deeper inside folders), sorted.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no image.
    """
    photos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file():
            photos.append(item)
        elif item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(
                    f"folder '{item}' holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"pass photos or a folder of photos"
                )
            photos.extend(found)
        else:
            raise FileNotFoundError(f"'{item}' does not exist; pass photos or folders of photos")
    return photos


def parse_attribute_edits(items: Sequence[str]) -> dict[str, int]:
    """``["Eyeglasses=1", "Young=0"]`` -> ``{"Eyeglasses": 1, "Young": 0}``.

    Raises:
        ValueError: not ``NAME=0|1`` or an unknown attribute (the 13 are listed).
    """
    edits = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or value not in ("0", "1"):
            raise ValueError(f"attribute edit '{item}' must be NAME=0 or NAME=1 (e.g. Eyeglasses=1)")
        if name not in ATTRIBUTES:
            raise ValueError(f"attribute '{name}' is not one of the 13: {', '.join(ATTRIBUTES)}")
        edits[name] = int(value)
    return edits


@dataclass
class Reference:
    """A face to verify against: a photo's face (with landmarks) or a ready crop (the run's target image)."""

    label: str
    image: torch.Tensor  # (3, H, W) in [-1, 1]: the photo, or the crop
    landmarks: np.ndarray | None = None  # (5, 2) in ``image`` pixels; None for a crop

    @classmethod
    def from_photo(cls, path: str | Path, detector: FaceDetector, model_size: int) -> Reference:
        """The single face of a reference photo (refusals as for the photos themselves)."""
        photo = read_photo(path)
        face = find_faces(photo, detector, model_size=model_size)[0]
        return cls(Path(path).name, photo.tensor(), face.landmarks)


@dataclass
class FaceCheck:
    """One FR model's verdict on one processed face."""

    model: str
    aligned: bool
    reference: str
    cosine: float
    threshold: float | None  # None: the model has no threshold at the FAR asked
    far: float

    @property
    def same(self) -> bool | None:
        return None if self.threshold is None else bool(self.cosine > self.threshold)


@dataclass
class PhotoResult:
    """What happened to one photo: the file written and each face's checks, or why it was skipped."""

    source: Path
    out: Path | None = None
    faces: list[dict] = field(default_factory=list)  # {"index", "box", "score", "checks": [FaceCheck]}
    error: str | None = None


class PhotoJob:
    """Protect or erase photos with one protection, detector and set of FR models.

    Args:
        protection: the scheme (:class:`Protection`); ``erase`` needs ``can_erase``.
        detector: the face detector.
        image_size: the protection model's image side.
        fr_models: FR models to verify with, by registry name (may be empty).
        far: the FAR whose threshold decides "same person".
        align: use the makers' alignment for the FR models that have one.
        feather: soft-edge width of the paste-back mask.
        attribute_judge: ``(N, 3, S, S) -> (N, 13)`` logits of the source attributes (None: all absent).
        device: where the protection and the FR models are (the crops are moved there).
    """

    def __init__(
        self,
        protection: Protection,
        detector: FaceDetector,
        image_size: int,
        *,
        fr_models: dict[str, FaceRecognizer] | None = None,
        far: float = 0.01,
        align: bool = True,
        feather: float = FEATHER,
        attribute_judge: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.protection, self.detector, self.size = protection, detector, image_size
        self.device = device or torch.device("cpu")  # device-ok: the default when none is given
        self.fr_models, self.far, self.align, self.feather = fr_models or {}, far, align, feather
        self.attribute_judge = attribute_judge

    # ------------------------------------------------------------------ faces in, faces out

    def _attributes(self, crops: torch.Tensor, edits: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.attribute_judge is None:
            att_a = torch.zeros(len(crops), len(ATTRIBUTES))
        else:
            with torch.no_grad():
                att_a = (self.attribute_judge(crops) > 0).float().cpu()
        att_b = att_a.clone()
        for name, value in edits.items():
            att_b[:, ATTRIBUTES.index(name)] = float(value)
        return att_a, att_b

    def process(
        self,
        path: Path,
        out_dir: Path,
        *,
        mode: str,
        edits: dict[str, int] | None = None,
        reference: Reference | None = None,
        person_check: bool = True,
        all_faces: bool = False,
        face_index: int | None = None,
        root: Path | None = None,
    ) -> PhotoResult:
        """Protect (``mode="protect"``) or erase (``"erase"``) the faces of one photo and write it to ``out_dir``.

        Args:
            path: the photo.
            out_dir: output folder; the photo keeps its name (and sub-folder below ``root``).
            mode: ``"protect"`` or ``"erase"``.
            edits: attribute edits (protect only).
            reference: the face each processed face is verified against (the target for
                protect, the person's reference photo for erase); None: no such check.
            person_check: also verify each processed face against the same face before processing.
            all_faces, face_index: which faces (see :func:`find_faces`).
            root: the folder ``path`` was found in (keeps sub-folders in ``out_dir``).

        Raises:
            PhotoError: the photo cannot be processed (the message says why and what to do).
        """
        photo = read_photo(path)
        faces = find_faces(photo, self.detector, model_size=self.size, all_faces=all_faces, face_index=face_index)
        image = photo.tensor()
        crops, matrices = zip(*(face_crop(image, f, self.size) for f in faces))
        batch = torch.stack(crops).to(self.device)
        if mode == "protect":
            att_a, att_b = self._attributes(batch, edits or {})
            with torch.no_grad():
                done = self.protection.protect(
                    batch, batch, att_a=att_a.to(self.device), att_b=att_b.to(self.device)
                )  # x_target: ignored by
                # schemes with fixed targets (ErasableMask); a per-photo target is a later extension
        elif mode == "erase":
            with torch.no_grad():
                done = self.protection.erase(batch, att_a=None, att_b=None)
        else:
            raise ValueError(f"mode '{mode}' is unknown; use 'protect' or 'erase'")
        done = done.cpu()
        pixels = np.asarray(photo.image, dtype=np.uint8)
        for crop, m in zip(done, matrices):
            pixels = paste_back(pixels, crop, m, self.feather)
        rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
        out = save_photo(photo, pixels, (out_dir / rel).with_suffix(output_suffix(photo)))
        written = read_photo(out).tensor()  # what a recogniser sees: the file as saved
        result = PhotoResult(path, out)
        for k, face in enumerate(faces):
            checks = []
            if reference is not None:
                checks += self._check(written, face, reference)
            if person_check:
                checks += self._check(written, face, Reference("itself before", image, face.landmarks))
            result.faces.append({"index": k, "box": face.box, "score": face.score, "checks": checks})
        return result

    # ------------------------------------------------------------------ verification

    def _embed(
        self, model: FaceRecognizer, name: str, image: torch.Tensor, landmarks: np.ndarray | None
    ) -> tuple[torch.Tensor, bool]:
        image = image.to(self.device)
        with torch.no_grad():
            if self.align and name in ALIGNMENTS and landmarks is not None:
                return model(align_faces(image[None], landmarks[None], ALIGNMENTS[name]))[0], True
            if landmarks is not None:
                crop, _ = face_crop(image, DetectedFace((0, 0, 0, 0), 1.0, landmarks), self.size)
                return model(crop[None])[0], False
            return model(image[None])[0], False

    def _check(self, image: torch.Tensor, face: DetectedFace, ref: Reference) -> list[FaceCheck]:
        checks = []
        for name, model in self.fr_models.items():
            a, aligned = self._embed(model, name, image, face.landmarks)
            b, _ = self._embed(model, name, ref.image, ref.landmarks)
            try:
                thr = model.threshold(self.far)
            except UncalibratedError:
                thr = None
            checks.append(FaceCheck(name, aligned, ref.label, float((a * b).sum().cpu()), thr, self.far))
        return checks


def run_photos(
    job: PhotoJob, inputs: Sequence[str | Path], out_dir: Path, *, progress: bool = True, **kwargs
) -> list[PhotoResult]:
    """:meth:`PhotoJob.process` over every photo of ``inputs``; a photo that fails is reported and skipped.

    Returns:
        One :class:`PhotoResult` per photo, in order; failed ones carry ``error``.
    """
    roots = {}
    for item in map(Path, inputs):
        if item.is_dir():
            roots.update({p: item for p in list_photos([item])})
    photos = list_photos(inputs)
    results = []
    for path in progress_bar(
        photos, desc=kwargs.get("mode", "photos"), unit="photo", disable=not progress or len(photos) < 2
    ):
        try:
            results.append(job.process(path, out_dir, root=roots.get(path), **kwargs))
        except PhotoError as e:
            results.append(PhotoResult(path, error=str(e)))
    return results
