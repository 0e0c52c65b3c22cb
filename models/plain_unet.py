"""A plain U-Net image-to-image network (the adaptive attacker's alternative restorer).

Two stride-2 downsamplings, skip connections by concatenation, a residual
output: ``y = clamp(x + tanh(head(...)), -1, 1)``, so an untrained network
is close to the identity. Images ``(N, 3, H, W)`` in [-1, 1], H and W
divisible by 4.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PlainUNet"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2),
    )


class PlainUNet(nn.Module):
    """U-Net with widths ``width``, ``2 width``, ``4 width``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.mid = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv2d(w, 3, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, a: Tensor | None = None) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"PlainUNet needs H and W divisible by 4; got {tuple(x.shape[-2:])}")
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.avg_pool2d(e1, 2))
        m = self.mid(nn.functional.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return (x + torch.tanh(self.head(d1))).clamp(-1, 1)
