"""Thresholds of a mini model, calibrated on the calibration identities of its world.

Every pair of images of the world's *calibration* identities (a role of
their own, :mod:`~erasablemask.experiments.fr_tools.mini_world`: never
trained on, never a source or a target) is scored; the default 24
identities × 12 images give 1,584 genuine and 39,744 impostor pairs, so
the FAR-0.001 threshold rests on ~40 false accepts (FARs with fewer than 10
expected false accepts are skipped). The thresholds are saved under the
digest of the model's weights and the world's calibration set
(:func:`~erasablemask.experiments.fr_tools.mini_world.calibration_set_id`),
so they follow the weights and never overwrite another world's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from erasablemask.experiments.fr_tools.calibration import DEFAULT_FARS, roc_auc, save_thresholds, thresholds_at_far
from erasablemask.experiments.fr_tools.mini_world import (
    MiniZooWorld,
    calibration_set_id,
    image_indices,
    population_world,
)
from erasablemask.models.fr.registry import FaceRecognizer, weights_digest

__all__ = ["embed", "calibration_scores", "heldout_scores", "calibrate_mini_model"]


@torch.no_grad()
def embed(model: FaceRecognizer, images: Tensor, batch_size: int = 128) -> Tensor:
    """``(N, D)`` unit embeddings of ``(N, 3, H, W)`` images in [-1, 1], in eval mode, batched."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def calibration_scores(
    model: FaceRecognizer, world: MiniZooWorld, identities: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every pair of images of ``identities`` (default: the world's calibration identities).

    Returns:
        ``(genuine, impostor)``: same-identity and different-identity pair
        scores, each unordered pair once.
    """
    idx = image_indices(world, world.calibration if identities is None else identities)
    pop = population_world(world)
    emb = embed(model, pop.images(idx))
    ids = torch.as_tensor(idx) // pop.images_per_identity
    i, j = torch.triu_indices(len(idx), len(idx), offset=1)
    cos = (emb[i] * emb[j]).sum(1).double().numpy()
    same = (ids[i] == ids[j]).numpy()
    return cos[same], cos[~same]


def calibrate_mini_model(
    name: str,
    model: FaceRecognizer,
    world: MiniZooWorld,
    *,
    weights_hash: str,
    weights_sha256: str | None = None,
    fars: Sequence[float] = DEFAULT_FARS,
) -> list[dict]:
    """Calibrate ``name`` on the calibration identities of ``world`` and save the thresholds.

    FARs with fewer than 10 expected false accepts on this world's impostor
    pairs are skipped (a small test world cannot support FAR 0.001). The
    record is keyed by the digest of ``model``'s weights and
    :func:`calibration_set_id` ``(world)``; it also keeps
    ``weights_hash`` (config hash) and ``weights_sha256`` (the weights
    file's digest) for provenance.

    Returns:
        The rows of :func:`~erasablemask.experiments.fr_tools.calibration.thresholds_at_far`.
    """
    genuine, impostor = calibration_scores(model, world)
    usable = [f for f in fars if f * impostor.size >= 10]
    if not usable:
        raise ValueError(
            f"calibration identities of this mini-world give {impostor.size} impostor pairs, too few for FAR "
            f"{max(fars):g}; raise data.miniworld.fr_calibration_identities or fr_calibration_images_per_identity"
        )
    rows = thresholds_at_far(genuine, impostor, usable)
    w = world
    source = (
        f"mini-world seed {w.seed} ({w.n_identities} ids x {w.images_per_identity} imgs, {w.image_size}px), "
        f"calibration identities {w.calibration[0]}-{w.calibration[-1]} x {w.calibration_images_per_identity} imgs "
        f"({genuine.size} genuine, {impostor.size} impostor pairs); weights {weights_hash}"
    )
    extra = {"weights_hash": weights_hash, "weights_sha256": weights_sha256, "auc": roc_auc(genuine, impostor)}
    save_thresholds(name, weights_digest(model.backbone), calibration_set_id(world), rows, source,
                    n_genuine=int(genuine.size), n_impostor=int(impostor.size), extra=extra)
    return rows


heldout_scores = calibration_scores  # the name callers used before calibration had its own identities
