"""Small frozen FR models for the competitor tests, served by ``fr_model_provider`` (no mini-zoo training).

Each is a seeded random projection of the mean-centred 16x16 face, so its cosine
similarity follows the faces' centred pixel similarity: attacking it is a real
white-box effect, and different identities are not all alike (as random conv nets make them).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from _curriculum_tiny import BLACK_BOX, SURROGATES
from torch import nn

from erasablemask.experiments.config.schema import ErasableMaskConfig
from erasablemask.experiments.data.splits import split_dataset
from erasablemask.experiments.fr_tools.zoo import fr_model_provider
from erasablemask.models.fr.registry import FaceRecognizer, FRSpec, Preprocessing


class CentredProjection(nn.Module):
    """``W · flatten(x − mean)`` with a seeded Gaussian ``W``."""

    def __init__(self, mean: torch.Tensor, dim: int, seed: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        gen = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(mean.numel(), dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, mean.numel(), generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj((x - self.mean).flatten(1))


@contextlib.contextmanager
def projection_fr_models(cfg: ErasableMaskConfig) -> Iterator[dict[str, FaceRecognizer]]:
    """Within the block, ``build_fr_models`` serves SURROGATES + BLACK_BOX as :class:`CentredProjection` models."""
    ds = split_dataset(cfg, "train")
    imgs = torch.stack([ds[i]["image"] for i in range(min(32, len(ds)))])
    mean = nn.functional.interpolate(imgs, size=(16, 16), mode="bilinear", align_corners=False).mean(0)
    models = {}
    for seed, name in enumerate(SURROGATES + BLACK_BOX):
        spec = FRSpec(
            name=name,
            family="test",
            embedding_size=32,
            preprocessing=Preprocessing(size=(16, 16)),
            thresholds={0.1: 0.3, 0.01: 0.5, 0.001: 0.7},
        )
        models[name] = FaceRecognizer(CentredProjection(mean, 32, seed), spec).requires_grad_(False).eval()
    with fr_model_provider(lambda n, d: models.get(n)):
        yield models
