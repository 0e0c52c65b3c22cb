"""Thresholds of a mini model, calibrated on the held-out identities of its world.

Every pair of images of the held-out identities ``[n - heldout, n)`` (which
no mini model sees) is scored, using all their images, not only val/test:
the default world's held-out val/test images give 448 impostor pairs, too
few for FAR 0.01; all 192 give 16,128. The thresholds are saved under the
digest of the model's weights and the world's calibration set
(:func:`~erasablemask.experiments.fr_tools.mini_world.heldout_calibration_set`),
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
    heldout_calibration_set,
    image_indices,
    population_world,
)
from erasablemask.models.fr.registry import FaceRecognizer, weights_digest

__all__ = ["embed", "heldout_scores", "calibrate_mini_model"]


@torch.no_grad()
def embed(model: FaceRecognizer, images: Tensor, batch_size: int = 128) -> Tensor:
    """``(N, D)`` unit embeddings of ``(N, 3, H, W)`` images in [-1, 1], in eval mode, batched."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def heldout_scores(
    model: FaceRecognizer, world: MiniZooWorld, identities: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every pair of images of ``identities`` (default: the held-out ones).

    Returns:
        ``(genuine, impostor)``: same-identity and different-identity pair
        scores, each unordered pair once.
    """
    idx = image_indices(world, world.heldout if identities is None else identities)
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
    """Calibrate ``name`` on the held-out identities of ``world`` and save the thresholds.

    FARs with fewer than 10 expected false accepts on this world's impostor
    pairs are skipped (a small test world cannot support FAR 0.001). The
    record is keyed by the digest of ``model``'s weights and
    :func:`heldout_calibration_set` ``(world)``; it also keeps
    ``weights_hash`` (config hash) and ``weights_sha256`` (the weights
    file's digest) for provenance.

    Returns:
        The rows of :func:`~erasablemask.experiments.fr_tools.calibration.thresholds_at_far`.
    """
    genuine, impostor = heldout_scores(model, world)
    usable = [f for f in fars if f * impostor.size >= 10]
    if not usable:
        raise ValueError(
            f"held-out identities of this mini-world give {impostor.size} impostor pairs, too few for FAR "
            f"{max(fars):g}; raise data.miniworld.heldout_identities or images_per_identity"
        )
    rows = thresholds_at_far(genuine, impostor, usable)
    w = world
    source = (
        f"mini-world seed {w.seed} ({w.n_identities} ids x {w.images_per_identity} imgs, {w.image_size}px), "
        f"held-out identities {w.heldout[0]}-{w.heldout[-1]}, all images; weights {weights_hash}"
    )
    extra = {"weights_hash": weights_hash, "weights_sha256": weights_sha256, "auc": roc_auc(genuine, impostor)}
    save_thresholds(name, weights_digest(model.backbone), heldout_calibration_set(world), rows, source,
                    n_genuine=int(genuine.size), n_impostor=int(impostor.size), extra=extra)
    return rows
