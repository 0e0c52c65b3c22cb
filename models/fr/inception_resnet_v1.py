"""Inception-ResNet-v1 with facenet-pytorch parameter names (the zoo's ``facenet``).

The zoo builds ``InceptionResnetV1(num_classes=8631)`` (facenet-pytorch's
VGGFace2 model, whose checkpoint includes the 8631-way ``logits`` layer) and
uses its 512-d pre-logits output. Names kept from the reference:

- stem: ``conv2d_1a``, ``conv2d_2a``, ``conv2d_2b``, ``maxpool_3a``,
  ``conv2d_3b``, ``conv2d_4a``, ``conv2d_4b`` (``BasicConv2d``: ``conv`` without
  bias, ``bn`` with eps 1e-3);
- ``repeat_1`` (5 × Block35, scale 0.17), ``mixed_6a``, ``repeat_2``
  (10 × Block17, scale 0.10), ``mixed_7a``, ``repeat_3`` (5 × Block8, scale
  0.20), ``block8`` (Block8, scale 1, no ReLU); each block has ``branch<i>``
  and a biased 1×1 ``conv2d`` back to the trunk width;
- head: ``last_linear`` (1792 → 512, no bias), ``last_bn`` (eps 1e-3),
  ``logits`` (512 → num_classes, biased).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InceptionResnetV1", "BasicConv2d", "Block35", "Block17", "Block8", "Mixed6a", "Mixed7a"]

Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm2d (eps 1e-3, the TensorFlow value) + ReLU."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: Size, stride: int, padding: Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _chain(*convs: tuple) -> nn.Sequential:
    return nn.Sequential(*(BasicConv2d(*c) for c in convs))


class _ResidualInception(nn.Module):
    """Shared forward: ``relu?(x + scale * conv2d(cat(branches)))``."""

    scale: float
    apply_relu: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [m for name, m in self.named_children() if name.startswith("branch")]
        out = x + self.scale * self.conv2d(torch.cat([b(x) for b in branches], dim=1))
        return F.relu(out) if self.apply_relu else out


class Block35(_ResidualInception):
    """Inception-ResNet-A on the 256-channel, 17×17 trunk."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.apply_relu = scale, True
        self.branch0 = BasicConv2d(256, 32, 1, 1)
        self.branch1 = _chain((256, 32, 1, 1), (32, 32, 3, 1, 1))
        self.branch2 = _chain((256, 32, 1, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1))
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1, stride=1)


class Block17(_ResidualInception):
    """Inception-ResNet-B on the 896-channel, 8×8 trunk."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale, self.apply_relu = scale, True
        self.branch0 = BasicConv2d(896, 128, 1, 1)
        self.branch1 = _chain((896, 128, 1, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0)))
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1, stride=1)


class Block8(_ResidualInception):
    """Inception-ResNet-C on the 1792-channel, 3×3 trunk."""

    def __init__(self, scale: float = 1.0, no_relu: bool = False) -> None:
        super().__init__()
        self.scale, self.apply_relu = scale, not no_relu
        self.branch0 = BasicConv2d(1792, 192, 1, 1)
        self.branch1 = _chain((1792, 192, 1, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0)))
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1, stride=1)


class Mixed6a(nn.Module):
    """Reduction-A: 256 → 896 channels, 17×17 → 8×8."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, 2)
        self.branch1 = _chain((256, 192, 1, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: 896 → 1792 channels, 8×8 → 3×3."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _chain((896, 256, 1, 1), (256, 384, 3, 2))
        self.branch1 = _chain((896, 256, 1, 1), (256, 256, 3, 2))
        self.branch2 = _chain((896, 256, 1, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class InceptionResnetV1(nn.Module):
    """facenet-pytorch ``InceptionResnetV1`` (random init; load weights separately).

    Args:
        num_classes: size of the ``logits`` layer (8631 for VGGFace2, 10575 for
            CASIA-WebFace); kept so the public checkpoint loads strictly.
        classify: return logits instead of the embedding.
        dropout_prob: dropout before ``last_linear`` (inactive in eval mode).

    Input ``(N, 3, 160, 160)`` (the zoo feeds RGB in [-1, 1]; facenet-pytorch's
    own pipeline uses ``(x - 127.5) / 128`` on MTCNN crops). Output: the
    L2-normalised 512-d embedding, or ``(N, num_classes)`` logits if ``classify``.
    """

    def __init__(self, num_classes: int = 8631, *, classify: bool = False, dropout_prob: float = 0.6) -> None:
        super().__init__()
        self.classify = classify
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3, 1)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3, 1)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(no_relu=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=1e-3, momentum=0.1)
        self.logits = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logits embedding ``(N, 512)``, not normalised."""
        for layer in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                      self.conv2d_4a, self.conv2d_4b, self.repeat_1, self.mixed_6a, self.repeat_2,
                      self.mixed_7a, self.repeat_3, self.block8, self.avgpool_1a):
            x = layer(x)
        return self.last_bn(self.last_linear(self.dropout(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 160, 160)`` → unit-norm ``(N, 512)``, or logits if ``classify``."""
        z = self.embed(x)
        return self.logits(z) if self.classify else F.normalize(z, p=2, dim=1)
