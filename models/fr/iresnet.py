"""InsightFace ``arcface_torch`` IResNet with its parameter names.

The zoo's ``arcface_r100``, ``cosface_r100`` (iresnet100) and ``arcface_r50``
(iresnet50) load insightface ``recognition/arcface_torch`` ``backbone.pth``
checkpoints. Names kept from ``backbones/iresnet.py``:

- stem: ``conv1`` (3×3, 3 → 64, stride 1), ``bn1``, ``prelu``;
- ``layer1``..``layer4`` (64, 128, 256, 512 channels, each starting with a
  stride-2 unit whose ``downsample`` is Conv1x1 ``.0`` + BatchNorm2d ``.1``);
  each ``IBasicBlock`` has ``bn1``, ``conv1``, ``bn2``, ``prelu``, ``conv2``
  (carries the stride), ``bn3``;
- head: ``bn2`` (BatchNorm2d 512), dropout, ``fc`` (512·7·7 → num_features),
  ``features`` (BatchNorm1d, weight fixed to 1 and frozen, as in the reference).

The reference's ``fp16`` flag (autocast of the trunk) does not change the
parameters and is left out. Input ``(N, 3, 112, 112)``, RGB, ``(x/255 - 0.5)/0.5``
— which is exactly the project's [-1, 1] convention.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LAYERS", "IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]

# arcface_torch backbones/iresnet.py: blocks per layer.
LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN-Conv-BN-PReLU-Conv(stride)-BN residual unit plus (optional) projection shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    """IResNet → ``num_features``-d embedding (not normalised).

    Args:
        layers: IBasicBlocks per layer (see :data:`LAYERS`).
        num_features: embedding size (512 for the public checkpoints).
        dropout: dropout before ``fc`` (0 in arcface_torch configs).
    """

    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, int, int, int], *, num_features: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as in arcface_torch

    def _make_layer(self, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )
        units = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        units.extend(IBasicBlock(planes, planes) for _ in range(1, blocks))
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 112, 112)`` → ``(N, num_features)``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet18(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet18"], **kw)


def iresnet34(**kw) -> IResNet:
    return IResNet(LAYERS["iresnet34"], **kw)


def iresnet50(**kw) -> IResNet:
    """arcface_torch ``r50``: blocks 3/4/14/3."""
    return IResNet(LAYERS["iresnet50"], **kw)


def iresnet100(**kw) -> IResNet:
    """arcface_torch ``r100``: blocks 3/13/30/3."""
    return IResNet(LAYERS["iresnet100"], **kw)
