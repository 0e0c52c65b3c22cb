"""GMAA (Li et al., CVPR 2023): the condition-driven generator and the two-headed PatchGAN, from ``tokaka22/GMAA``.

Ported from ``src/models/gmaa/models/model.py`` (GANimation/StarGAN style):

- generator ``G(x, c)``: the condition ``c`` (``(N, n_cond)``, continuous in [0, 1]) tiled to the
  image size and concatenated to ``x``; conv7 (``dim``) + IN + ReLU, two conv4/2 layers (-> 4·dim),
  ``n_res`` residual blocks (official 6, instance norm), two transposed conv4/2 layers back up, then
  the colour-regression head ``reg`` (conv7 to 3 channels, tanh). The official code trains and
  tests with ``x_fake = reg`` directly (``_, x_fake, _ = G(x, c)``); its attention and noise heads,
  used by neither training nor testing, are left out (an unused head would also break DDP, which
  requires every trained parameter to receive a gradient);
- discriminator: ``n_layers`` (official 6) stride-2 conv4 layers, 64 -> 2048 channels,
  LeakyReLU 0.01, then ``out_src`` (conv3 to 1 channel: the real/fake map) and ``out_cls`` (a conv
  covering the last map: regresses the ``n_cond`` condition intensities).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GMAAGenerator", "GMAADiscriminator"]


class _Residual(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.InstanceNorm2d(dim, affine=True),
            nn.ReLU(True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.InstanceNorm2d(dim, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class GMAAGenerator(nn.Module):
    """``x_fake = G(x, c)``: ``x`` ``(N, 3, H, W)`` in [-1, 1], ``c`` ``(N, n_cond)`` in [0, 1].

    Args:
        n_cond: condition size (17 AUs officially; 13 attribute intensities on the mini-world).
        dim: width of the first layer (official 64).
        n_res: residual blocks (official 6).
    """

    def __init__(self, *, n_cond: int, dim: int = 64, n_res: int = 6) -> None:
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=True)  # noqa: E731
        self.n_cond = n_cond
        self.body = nn.Sequential(
            nn.Conv2d(3 + n_cond, dim, 7, padding=3, bias=False),
            norm(dim),
            nn.ReLU(True),
            nn.Conv2d(dim, 2 * dim, 4, 2, 1, bias=False),
            norm(2 * dim),
            nn.ReLU(True),
            nn.Conv2d(2 * dim, 4 * dim, 4, 2, 1, bias=False),
            norm(4 * dim),
            nn.ReLU(True),
            *[_Residual(4 * dim) for _ in range(n_res)],
            nn.ConvTranspose2d(4 * dim, 2 * dim, 4, 2, 1, bias=False),
            norm(2 * dim),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * dim, dim, 4, 2, 1, bias=False),
            norm(dim),
            nn.ReLU(True),
        )
        self.reg = nn.Sequential(nn.Conv2d(dim, 3, 7, padding=3, bias=False), nn.Tanh())

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if c.ndim != 2 or c.shape != (x.shape[0], self.n_cond):
            raise ValueError(f"GMAA condition must be (N, {self.n_cond}) for N={x.shape[0]}; got {tuple(c.shape)}")
        tiled = c.to(x)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        h = self.body(torch.cat([x, tiled], dim=1))
        return self.reg(h)


class GMAADiscriminator(nn.Module):
    """``(src, cls) = D(x)``: a real/fake map and the ``n_cond`` condition intensities regressed.

    Args:
        img_size: input size (divisible by ``2**n_layers``).
        n_cond: condition size.
        dim: channels of the first layer (official 64), doubled per layer.
        n_layers: stride-2 layers (official 6).
    """

    def __init__(self, *, img_size: int, n_cond: int, dim: int = 64, n_layers: int = 6) -> None:
        super().__init__()
        if img_size % 2**n_layers:
            raise ValueError(
                f"GMAA discriminator: image size {img_size} is not divisible by 2**{n_layers}; lower n_layers"
            )
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_layers):
            layers += [nn.Conv2d(cin, dim * 2**i, 4, 2, 1), nn.LeakyReLU(0.01, True)]
            cin = dim * 2**i
        self.main = nn.Sequential(*layers)
        self.out_src = nn.Conv2d(cin, 1, 3, padding=1, bias=False)
        self.out_cls = nn.Conv2d(cin, n_cond, img_size // 2**n_layers, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.main(x)
        return self.out_src(h), self.out_cls(h).flatten(1)
