"""Face verification with a registered FR model: load photos, embed, compare.

Images are read with the project's one loader
(:func:`erasablemask.experiments.data.image_io.load_image_tensor`) into its
convention, ``(3, H, W)`` float in ``[-1, 1]``, RGB, EXIF orientation
applied (a photo is embedded the way a viewer shows it); images with an
alpha channel are composited on white instead of dropping alpha (which would
expose whatever colour transparent pixels happen to store).

Similarity is the cosine of the model's L2-normalised embeddings. A pair is
accepted ("same person") at a given FAR when ``cosine > threshold`` (strict,
the convention of the field's evaluation code and of
:func:`erasablemask.experiments.fr_tools.calibration.thresholds_at_far`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from erasablemask.experiments.data.image_io import load_image_tensor
from erasablemask.experiments.progress import progress_bar
from erasablemask.models.fr.registry import FaceRecognizer, UncalibratedError

__all__ = ["decisions", "embed_images", "load_face_image", "verify_pair"]


def load_face_image(
    path: str | Path, size: int | tuple[int, int] | None = None, *, min_side: int | None = None
) -> torch.Tensor:
    """Read one image file as ``(3, H, W)`` float32 RGB in ``[-1, 1]`` with the project's one loader.

    :func:`erasablemask.experiments.data.image_io.load_image_tensor` applies
    the EXIF orientation, converts to RGB (alpha composited on white) and,
    with a ``size``, centre-crops to its aspect ratio and resizes (bicubic,
    antialiased), exactly as for training and target photos.

    Args:
        path: image file (anything Pillow reads).
        size: ``s`` or ``(height, width)`` to crop and resize to; ``None``
            keeps the native size (FR models resize themselves).
        min_side: with ``size=None``, the side the model shrinks the image to: a
            large photo is decoded at a reduced scale (aspect kept), so memory
            follows the model's input, not the photo (see ``load_image_tensor``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataSetError: (a ``ValueError``) the file is not a readable image, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' not found; check the path (and --images DIR)")
    return load_image_tensor(path, size, min_side=min_side)


@torch.no_grad()
def embed_images(
    model: FaceRecognizer,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 32,
    image_size: tuple[int, int] | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Embed each image file once.

    Each image is resized to the model's input size on load, with the
    wrapper's own :meth:`~FaceRecognizer.crop_and_resize` (so the result is
    what ``model(image)`` gives), and then batched; for models with a centre
    crop, only images of equal size are batched.

    Args:
        model: a built FR model (any device; inputs are moved to it).
        paths: image files.
        batch_size: images per forward pass.
        image_size: optional ``(height, width)`` every image is cropped and resized to on load
            (:func:`load_face_image`); ``None``: native size.
        progress: show a tqdm bar.

    Returns:
        ``(len(paths), embedding_size)`` float32 CPU tensor of unit-norm rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next((t.device for t in model.parameters()), torch.device("cpu"))  # device-ok: follows the model
    # Resize each image on load with the model's own op (forward then skips it), so that all
    # images batch and only model-sized copies are held in memory.
    shrink = model.spec.preprocessing.center_crop == 1.0
    # The side the model's own resize needs from the whole image (before its centre crop):
    # large photos are decoded at a reduced scale that keeps at least twice this.
    pre = model.spec.preprocessing
    need = math.ceil(max(pre.size) / pre.center_crop)
    images = []
    for path in progress_bar(paths, desc="load", disable=not progress):
        im = load_face_image(path, image_size, min_side=None if image_size else need)
        images.append(model.crop_and_resize(im[None])[0] if shrink else im)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
    out = torch.empty(len(images), model.spec.embedding_size)
    bar = progress_bar(total=len(images), desc=f"embed ({model.spec.name})", disable=not progress)
    for idx in by_size.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            batch = torch.stack([images[i] for i in chunk]).to(device)
            out[chunk] = model(batch).float().cpu()
            bar.update(len(chunk))
    bar.close()
    return out


def decisions(model: FaceRecognizer, cosine: float) -> list[dict]:
    """Accept/reject ``cosine`` at every FAR the model has a threshold for.

    Returns:
        One ``{"far", "threshold", "same"}`` per known FAR, descending FAR
        (0.1, 0.01, 0.001: the paper's column order); empty when the model is
        uncalibrated.
    """
    rows = []
    for far in sorted(model.spec.thresholds, reverse=True):
        try:
            thr = model.threshold(far)
        except UncalibratedError:  # pragma: no cover - spec keys are the known FARs
            continue
        rows.append({"far": far, "threshold": thr, "same": bool(cosine > thr)})
    return rows


def verify_pair(model: FaceRecognizer, a: str | Path, b: str | Path) -> dict:
    """Cosine similarity of two photos and the decision at each known FAR.

    Returns:
        ``{"cosine": float, "decisions": [{"far", "threshold", "same"}, ...]}``.
    """
    emb = embed_images(model, [a, b], batch_size=1, progress=False)
    cosine = float((emb[0] * emb[1]).sum())
    return {"cosine": cosine, "decisions": decisions(model, cosine)}
