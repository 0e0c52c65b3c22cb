"""IR and IR-SE ResNets with face.evoLVe / InsightFace_Pytorch parameter names.

The paper zoo's ``ir152`` (``IR_152((112, 112))``) and ``irse50``
(``Backbone(50, 0.6, 'ir_se')``), as used by Adv-Makeup, AMT-GAN and
CLIP2Protect, both come from face.evoLVe's ``model_irse.py``. This module
re-implements that architecture so that ``state_dict()`` has exactly the
public checkpoints' names and shapes:

- ``input_layer``: Conv3x3(3→64) ``.0``, BatchNorm2d ``.1``, PReLU ``.2``;
- ``body.<i>``: one residual unit per index, each with ``shortcut_layer``
  (``MaxPool2d(1, stride)`` when channels match, else Conv1x1 ``.0`` +
  BatchNorm2d ``.1``) and ``res_layer`` (BN ``.0``, Conv3x3 ``.1``, PReLU ``.2``,
  Conv3x3 with the stride ``.3``, BN ``.4``, and for IR-SE an SE module ``.5``
  with ``fc1``/``fc2`` 1×1 convs, reduction 16, no bias);
- ``output_layer``: BatchNorm2d ``.0``, Dropout ``.1``, Flatten ``.2``,
  Linear(512·7·7 → 512) ``.3``, BatchNorm1d ``.4``.

Units per stage (face.evoLVe ``get_blocks``): 50 → 3/4/14/3, 100 → 3/13/30/3,
152 → 3/8/36/3; every stage starts with a stride-2 unit. "IR-101" is built
with ``num_layers=100``, as in the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UNITS_PER_STAGE",
    "IRBackbone",
    "SEModule",
    "BottleneckIR",
    "BottleneckIRSE",
    "ir_50",
    "ir_101",
    "ir_152",
    "ir_se_50",
    "ir_se_101",
    "ir_se_152",
]

# face.evoLVe get_blocks(): residual units per stage (depths 64, 128, 256, 512).
UNITS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
STAGE_DEPTHS = (64, 128, 256, 512)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * w


def _shortcut(in_channel: int, depth: int, stride: int) -> nn.Module:
    if in_channel == depth:
        return nn.MaxPool2d(1, stride)  # subsampling identity, no parameters
    return nn.Sequential(
        nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
        nn.BatchNorm2d(depth),
    )


class BottleneckIR(nn.Module):
    """Improved residual unit: BN-Conv-PReLU-Conv(stride)-BN plus shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_channel, depth, stride)
        self.res_layer = nn.Sequential(*self._residual(in_channel, depth, stride))

    @staticmethod
    def _residual(in_channel: int, depth: int, stride: int) -> list[nn.Module]:
        return [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIRSE(BottleneckIR):
    """IR unit whose residual branch ends with an :class:`SEModule` (``res_layer.5``)."""

    @staticmethod
    def _residual(in_channel: int, depth: int, stride: int) -> list[nn.Module]:
        return BottleneckIR._residual(in_channel, depth, stride) + [SEModule(depth, 16)]


class IRBackbone(nn.Module):
    """face.evoLVe ``Backbone``: IR / IR-SE ResNet → 512-d embedding.

    Args:
        num_layers: 50, 100 or 152 (see :data:`UNITS_PER_STAGE`).
        mode: ``"ir"`` or ``"ir_se"``.
        drop_ratio: dropout before the embedding Linear (0.4 in ``IR_152``,
            0.6 in ``Backbone(50, 0.6, 'ir_se')``; inactive in eval mode).
        input_size: 112 or 224 (square); sets the Linear's input (7·7 or 14·14).
        l2_normalize: L2-normalise the output. The reference ``irse.Backbone``
            does; ``ir152.Backbone`` returns the raw BatchNorm1d output.

    Input ``(N, 3, input_size, input_size)`` in the checkpoint's convention
    (the zoo feeds RGB in [-1, 1]); output ``(N, 512)``.
    """

    def __init__(
        self,
        num_layers: int,
        mode: Literal["ir", "ir_se"] = "ir",
        *,
        drop_ratio: float = 0.4,
        input_size: int = 112,
        l2_normalize: bool = False,
    ) -> None:
        super().__init__()
        if num_layers not in UNITS_PER_STAGE:
            raise ValueError(f"num_layers={num_layers} unsupported; use one of {sorted(UNITS_PER_STAGE)}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode={mode!r} unsupported; use 'ir' or 'ir_se'")
        if input_size not in (112, 224):
            raise ValueError(f"input_size={input_size} unsupported; use 112 or 224")
        unit = BottleneckIR if mode == "ir" else BottleneckIRSE
        self.num_layers, self.mode, self.input_size = num_layers, mode, input_size
        self.l2_normalize = l2_normalize

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units: list[nn.Module] = []
        in_channel = 64
        for depth, n_units in zip(STAGE_DEPTHS, UNITS_PER_STAGE[num_layers]):
            units.append(unit(in_channel, depth, 2))
            units.extend(unit(depth, depth, 1) for _ in range(n_units - 1))
            in_channel = depth
        self.body = nn.Sequential(*units)
        spatial = input_size // 16  # four stride-2 stages: 112 -> 7, 224 -> 14
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * spatial * spatial, 512),
            nn.BatchNorm1d(512),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` → ``(N, 512)`` (unit norm iff ``l2_normalize``)."""
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1) if self.l2_normalize else x


def ir_50(input_size: int = 112, **kw) -> IRBackbone:
    """IR-50 (units 3/4/14/3)."""
    return IRBackbone(50, "ir", input_size=input_size, **kw)


def ir_101(input_size: int = 112, **kw) -> IRBackbone:
    """IR-101, built as face.evoLVe does with ``num_layers=100`` (units 3/13/30/3)."""
    return IRBackbone(100, "ir", input_size=input_size, **kw)


def ir_152(input_size: int = 112, **kw) -> IRBackbone:
    """IR-152 (units 3/8/36/3): the zoo's ``ir152`` is ``ir_152(112)``, raw output."""
    return IRBackbone(152, "ir", input_size=input_size, **kw)


def ir_se_50(input_size: int = 112, **kw) -> IRBackbone:
    """IR-SE-50: the zoo's ``irse50`` is ``ir_se_50(drop_ratio=0.6, l2_normalize=True)``."""
    return IRBackbone(50, "ir_se", input_size=input_size, **kw)


def ir_se_101(input_size: int = 112, **kw) -> IRBackbone:
    """IR-SE-101 (``num_layers=100``)."""
    return IRBackbone(100, "ir_se", input_size=input_size, **kw)


def ir_se_152(input_size: int = 112, **kw) -> IRBackbone:
    """IR-SE-152."""
    return IRBackbone(152, "ir_se", input_size=input_size, **kw)
