"""Tiny, twice-differentiable networks for gradient tests (shared by test_meta_aux.py and test_remote_fr.py)."""

from __future__ import annotations

import torch
from torch import nn

from erasablemask.models.fr.registry import FaceRecognizer, FRSpec, Preprocessing


class TinyGenerator(nn.Module):
    """x -> tanh(x + conv2(tanh(conv1(x)))): an E_adv stand-in, output in (-1, 1), twice differentiable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.conv2(torch.tanh(self.conv1(x))))


def tiny_fr(name: str, act: nn.Module, seed: int, thresholds: dict[float, float] | None = None) -> FaceRecognizer:
    """A frozen random FR net (float32): conv -> ``act`` -> linear, 6-d embeddings of 6x6 inputs, seeded."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2), act, nn.Flatten(), nn.Linear(5 * 2 * 2, 6))
    spec = FRSpec(name=name, family="tiny", embedding_size=6, preprocessing=Preprocessing(size=(6, 6)),
                  thresholds=dict(thresholds or {}))
    return FaceRecognizer(backbone, spec).requires_grad_(False).eval()
