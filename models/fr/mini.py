"""Tiny face-recognition backbones for the synthetic mini-world.

Four architecture families, each a scaled-down version of a model in the
paper's zoo, so that transfer from white-box surrogates to black-box models
can be studied without downloads (DESIGN.md, "Mini-world models"):

* :class:`TinyIResNet` — insightface IResNet (``arcface_r100`` family):
  pre-activation ``BN-conv-BN-PReLU-conv(stride)-BN`` blocks, an
  ``BN-flatten-FC-BN`` embedding head.
* :class:`TinyIRSE` — IR-SE (``irse50`` family): IR blocks with a
  squeeze-and-excitation gate and a max-pool / conv shortcut.
* :class:`TinyMobileFaceNet` — MobileFaceNet (``mobile_face``): depthwise
  separable inverted residuals and a global depthwise (GDC) head.
* :class:`TinyInceptionResNet` — FaceNet's InceptionResnetV1 (``facenet``):
  ReLU, multi-branch residual blocks scaled before the sum, average pool.

Each takes ``(N, 3, S, S)`` already preprocessed by the
:class:`~erasablemask.models.fr.registry.FaceRecognizer` wrapper and returns
raw ``(N, embedding_size)`` embeddings (the wrapper L2-normalises). Sizes
are ~0.1-1 M parameters so that training takes well under a minute on one
CPU core.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "TinyIResNet",
    "TinyIRSE",
    "TinyMobileFaceNet",
    "TinyInceptionResNet",
    "MINI_FAMILIES",
    "build_mini_backbone",
]


def _conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: str | None = "prelu") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act == "prelu":
        layers.append(nn.PReLU(cout))
    elif act == "relu":
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _flat_head(channels: int, spatial: int, embedding_size: int, dropout: float) -> nn.Sequential:
    """insightface's output layer: BN2d, dropout, flatten, FC, BN1d."""
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.Dropout(dropout),
        nn.Flatten(),
        nn.Linear(channels * spatial * spatial, embedding_size),
        nn.BatchNorm1d(embedding_size),
    )


def _out_size(size: int, strides: int) -> int:
    for _ in range(strides):
        size = (size + 1) // 2  # 3x3 conv, padding 1, stride 2
    return size


# --------------------------------------------------------------------------- IResNet
class IRBlock(nn.Module):
    """IResNet basic block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity() if cin == cout and stride == 1 else _conv_bn(cin, cout, 1, stride, act=None)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res(x) + self.shortcut(x)


class _StagedIRNet(nn.Module):
    """Stem (3x3, stride 2), stages of ``block`` (the first of each strided), insightface head."""

    def __init__(
        self,
        block: type[nn.Module],
        *,
        input_size: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        embedding_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(3, widths[0], 3, 2)
        blocks: list[nn.Module] = []
        for cin, cout, n in zip(widths[:-1], widths[1:], depths):
            blocks += [block(cin, cout, 2)] + [block(cout, cout, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*blocks)
        self.head = _flat_head(widths[-1], _out_size(input_size, 1 + len(depths)), embedding_size, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)))


class TinyIResNet(_StagedIRNet):
    """A 3-stage IResNet (stem stride 2, each stage halves the size)."""

    def __init__(
        self,
        *,
        input_size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 96),
        depths: tuple[int, ...] = (1, 2, 1),
        embedding_size: int = 128,
        dropout: float = 0.0,
    ) -> None:
        kw = dict(input_size=input_size, widths=widths, depths=depths, embedding_size=embedding_size, dropout=dropout)
        super().__init__(IRBlock, **kw)


# --------------------------------------------------------------------------- IR-SE
class SEModule(nn.Module):
    """Squeeze-and-excitation gate (1x1 convs, as in the insightface IR-SE)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class IRSEBlock(nn.Module):
    """bottleneck_IR_SE: BN-conv-PReLU-conv(stride)-BN-SE; max-pool or conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            SEModule(cout),
        )
        if cin == cout:
            self.shortcut: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut = _conv_bn(cin, cout, 1, stride, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return self.res(x) + self.shortcut(x)


class TinyIRSE(_StagedIRNet):
    """A 3-stage IR-SE net; each stage is one strided block and ``depth - 1`` plain ones."""

    def __init__(
        self,
        *,
        input_size: int = 56,
        widths: tuple[int, ...] = (24, 32, 48, 96),
        depths: tuple[int, ...] = (2, 1, 1),
        embedding_size: int = 128,
        dropout: float = 0.0,
    ) -> None:
        kw = dict(input_size=input_size, widths=widths, depths=depths, embedding_size=embedding_size, dropout=dropout)
        super().__init__(IRSEBlock, **kw)


# --------------------------------------------------------------------------- MobileFaceNet
class InvertedResidual(nn.Module):
    """MobileFaceNet bottleneck: 1x1 expand-PReLU, depthwise 3x3-PReLU, 1x1 project-BN."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.block = nn.Sequential(
            _conv_bn(cin, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=None),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class TinyMobileFaceNet(nn.Module):
    """MobileFaceNet with fewer, narrower bottlenecks and a GDC head.

    ``setting`` rows are ``(expansion, channels, repeats, stride)`` as in the
    MobileFaceNet paper's Table 1.
    """

    def __init__(
        self,
        *,
        input_size: int = 64,
        stem: int = 16,
        setting: tuple[tuple[int, int, int, int], ...] = (
            (2, 24, 1, 2),
            (4, 48, 1, 2),
            (2, 48, 1, 1),
            (4, 64, 1, 2),
        ),
        head_channels: int = 256,
        embedding_size: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, stem, 3, 2), _conv_bn(stem, stem, 3, 1, groups=stem)]
        cin, strides = stem, 1
        for t, c, n, s in setting:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
            strides += s == 2
        layers.append(_conv_bn(cin, head_channels, 1))
        self.features = nn.Sequential(*layers)
        k = _out_size(input_size, strides)
        # GDC: a linear depthwise conv over the whole k x k map, then a linear 1x1 projection.
        self.gdc = _conv_bn(head_channels, head_channels, k, 1, groups=head_channels, act=None)
        self.gdc[0].padding = (0, 0)
        self.project = nn.Sequential(
            nn.Conv2d(head_channels, embedding_size, 1, bias=False), nn.BatchNorm2d(embedding_size)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.gdc(self.features(x))).flatten(1)


# --------------------------------------------------------------------------- Inception-ResNet
class InceptionResBlock(nn.Module):
    """Inception-ResNet block: concatenated branches, 1x1 up-projection, ``x + scale * up``, ReLU.

    ``kind="a"`` (Block35: 1x1 | 1x1-3x3 | 1x1-3x3-3x3) or ``kind="b"``
    (Block17: 1x1 | 1x1-1x7-7x1, here 1x1-1x3-3x1 at this small size).
    """

    def __init__(self, channels: int, branch: int, kind: str, scale: float) -> None:
        super().__init__()
        if kind == "a":
            self.branches = nn.ModuleList(
                [
                    _conv_bn(channels, branch, 1, act="relu"),
                    nn.Sequential(_conv_bn(channels, branch, 1, act="relu"), _conv_bn(branch, branch, 3, act="relu")),
                    nn.Sequential(
                        _conv_bn(channels, branch, 1, act="relu"),
                        _conv_bn(branch, branch, 3, act="relu"),
                        _conv_bn(branch, branch, 3, act="relu"),
                    ),
                ]
            )
        elif kind == "b":
            self.branches = nn.ModuleList(
                [
                    _conv_bn(channels, branch, 1, act="relu"),
                    nn.Sequential(
                        _conv_bn(channels, branch, 1, act="relu"),
                        nn.Conv2d(branch, branch, (1, 3), 1, (0, 1), bias=False),
                        nn.BatchNorm2d(branch),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(branch, branch, (3, 1), 1, (1, 0), bias=False),
                        nn.BatchNorm2d(branch),
                        nn.ReLU(inplace=True),
                    ),
                ]
            )
        else:
            raise ValueError(f"InceptionResBlock kind must be 'a' or 'b', got {kind!r}")
        self.up = nn.Conv2d(branch * len(self.branches), channels, 1)
        self.scale = scale
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.up(torch.cat([b(x) for b in self.branches], dim=1))
        return self.act(x + self.scale * y)


class Reduction(nn.Module):
    """Inception reduction: max-pool | 3x3 stride-2 conv, concatenated."""

    def __init__(self, cin: int, conv_out: int) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv = _conv_bn(cin, conv_out, 3, 2, act="relu")

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.pool(x), self.conv(x)], dim=1)


class TinyInceptionResNet(nn.Module):
    """InceptionResnetV1 in miniature: ReLU stem, Block35s, reduction, Block17s, avg-pool, FC, BN."""

    def __init__(
        self,
        *,
        input_size: int = 48,
        stem: int = 32,
        branch: int = 16,
        blocks_a: int = 2,
        blocks_b: int = 2,
        embedding_size: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        del input_size  # average pooling makes the head size-independent
        self.stem = nn.Sequential(
            _conv_bn(3, stem // 2, 3, 2, act="relu"),
            _conv_bn(stem // 2, stem, 3, 1, act="relu"),
            nn.MaxPool2d(3, 2, 1),
        )
        self.stage_a = nn.Sequential(*[InceptionResBlock(stem, branch, "a", 0.17) for _ in range(blocks_a)])
        self.reduce = Reduction(stem, stem)
        self.stage_b = nn.Sequential(*[InceptionResBlock(2 * stem, branch, "b", 0.10) for _ in range(blocks_b)])
        self.reduce2 = Reduction(2 * stem, 2 * stem)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * stem, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size, eps=1e-3),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(self.stage_a(self.stem(x)))
        return self.head(self.reduce2(self.stage_b(x)))


MINI_FAMILIES: dict[str, type[nn.Module]] = {
    "iresnet": TinyIResNet,
    "irse": TinyIRSE,
    "mobileface": TinyMobileFaceNet,
    "incept": TinyInceptionResNet,
}


def build_mini_backbone(family: str, *, input_size: int, embedding_size: int = 128) -> nn.Module:
    """Instantiate a tiny backbone by family name (see :data:`MINI_FAMILIES`)."""
    if family not in MINI_FAMILIES:
        raise ValueError(f"unknown mini FR family {family!r}; choose one of {sorted(MINI_FAMILIES)}")
    return MINI_FAMILIES[family](input_size=input_size, embedding_size=embedding_size)
