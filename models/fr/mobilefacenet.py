"""MobileFaceNet with InsightFace_Pytorch parameter names (the zoo's ``mobile_face``).

Adv-Makeup, AMT-GAN and CLIP2Protect build ``irse.MobileFaceNet(512)``
(originally TreB1eN's InsightFace_Pytorch ``model.py``) and load
``mobile_face.pth`` into it. This re-implementation keeps those names:

- ``conv1`` / ``conv2_dw`` / ``conv_6_sep``: ``ConvBlock`` (``conv``, ``bn``, ``prelu``);
- ``conv_23`` / ``conv_34`` / ``conv_45``: ``DepthWise`` (``conv`` 1×1 expand,
  ``conv_dw`` depthwise 3×3 stride 2, ``project`` 1×1 linear);
- ``conv_3`` / ``conv_4`` / ``conv_5``: ``Residual`` with ``model.<i>``
  DepthWise units (4, 6, 2 of them, expansion 128, 256, 256);
- ``conv_6_dw``: ``LinearBlock`` 7×7 global depthwise conv (GDConv);
- ``linear`` (512 → embedding, no bias) and ``bn`` (BatchNorm1d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MobileFaceNet", "ConvBlock", "LinearBlock", "DepthWise", "Residual"]

Pair = tuple[int, int]


class LinearBlock(nn.Module):
    """Conv (no bias) + BatchNorm2d, no activation."""

    def __init__(
        self, in_c: int, out_c: int, kernel: Pair = (1, 1), stride: Pair = (1, 1),
        padding: Pair = (0, 0), groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ConvBlock(LinearBlock):
    """Conv (no bias) + BatchNorm2d + PReLU."""

    def __init__(
        self, in_c: int, out_c: int, kernel: Pair = (1, 1), stride: Pair = (1, 1),
        padding: Pair = (0, 0), groups: int = 1,
    ) -> None:
        super().__init__(in_c, out_c, kernel, stride, padding, groups)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1×1 expand to ``groups`` channels, depthwise conv, 1×1 project.

    Args:
        in_c: input channels.
        out_c: output channels.
        residual: add the input to the output (stride 1, ``in_c == out_c``).
        groups: the expanded width (the reference names it ``groups``).
    """

    def __init__(
        self, in_c: int, out_c: int, *, residual: bool = False, kernel: Pair = (3, 3),
        stride: Pair = (2, 2), padding: Pair = (1, 1), groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = ConvBlock(in_c, groups)
        self.conv_dw = ConvBlock(groups, groups, kernel, stride, padding, groups=groups)
        self.project = LinearBlock(groups, out_c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    """``num_block`` residual :class:`DepthWise` units at constant width ``c``."""

    def __init__(self, c: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            *[DepthWise(c, c, residual=True, stride=(1, 1), groups=groups) for _ in range(num_block)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet (Chen et al. 2018), InsightFace_Pytorch variant.

    Args:
        embedding_size: output length (512 in the zoo).
        l2_normalize: L2-normalise the output, as the reference does.

    Input ``(N, 3, 112, 112)`` (the zoo feeds RGB in [-1, 1]); output
    ``(N, embedding_size)``.
    """

    def __init__(self, embedding_size: int = 512, *, l2_normalize: bool = True) -> None:
        super().__init__()
        self.l2_normalize = l2_normalize
        self.conv1 = ConvBlock(3, 64, (3, 3), (2, 2), (1, 1))
        self.conv2_dw = ConvBlock(64, 64, (3, 3), (1, 1), (1, 1), groups=64)
        self.conv_23 = DepthWise(64, 64, groups=128)
        self.conv_3 = Residual(64, num_block=4, groups=128)
        self.conv_34 = DepthWise(64, 128, groups=256)
        self.conv_4 = Residual(128, num_block=6, groups=256)
        self.conv_45 = DepthWise(128, 128, groups=512)
        self.conv_5 = Residual(128, num_block=2, groups=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = LinearBlock(512, 512, (7, 7), groups=512)  # GDConv: 7x7 -> 1x1
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` → ``(N, embedding_size)``."""
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34,
                      self.conv_4, self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        x = self.bn(self.linear(self.conv_6_flatten(x)))
        return F.normalize(x, dim=1) if self.l2_normalize else x
