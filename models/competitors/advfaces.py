"""AdvFaces (Deb, Zhang, Jain, IJCB 2020): generator and discriminator, ported from ``ronny3050/AdvFaces``.

Architecture of ``architectures/advfaces.py`` (TF 1.14, slim), reflect padding throughout:

- generator (target mode: input ``concat(x, x_target)``, 6 channels):
  encoder conv7 (``dim``) -> conv4/2 (2·dim) -> conv4/2 (4·dim), instance norm + ReLU,
  then ``n_res`` residual blocks (conv3 + IN + ReLU, conv3 + IN, added back);
  decoder: nearest ×2 + conv5 (2·dim) -> nearest ×2 + conv5 (dim), layer norm + ReLU,
  then conv7 to 3 channels and tanh: the perturbation ``δ`` in [-1, 1] ([0, 1]-image units);
- discriminator: conv4/2 with 32 -> 64 -> 128 -> 256 -> 512 channels (``dim`` · 2^i), the first two
  without normalisation or activation (as the slim call), the others batch norm + LeakyReLU 0.2,
  then a 1×1 conv to one PatchGAN logit map.

Slim's ``layer_norm`` normalises each sample over (H, W, C) with a per-channel affine:
``GroupNorm(1, C)`` here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AdvFacesGenerator", "AdvFacesDiscriminator", "apply_perturbation"]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    pad = (k - 1) // 2 if stride == 1 else (k - stride) // 2
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, padding_mode="reflect")


class _Residual(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(dim, dim, 3),
            nn.InstanceNorm2d(dim, affine=True),
            nn.ReLU(True),
            _conv(dim, dim, 3),
            nn.InstanceNorm2d(dim, affine=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + x


class AdvFacesGenerator(nn.Module):
    """``δ = G(x, x_target)``, ``(N, 3, H, W)`` in [-1, 1] ([0, 1]-image units); H, W divisible by 4.

    Args:
        dim: width of the first layer (official 64).
        n_res: residual blocks (official 3).
        in_channels: 6 in target mode (source and target concatenated), 3 in obfuscation mode.
    """

    def __init__(self, *, dim: int = 64, n_res: int = 3, in_channels: int = 6) -> None:
        super().__init__()
        norm = lambda c: nn.InstanceNorm2d(c, affine=True)  # noqa: E731
        self.encoder = nn.Sequential(
            _conv(in_channels, dim, 7),
            norm(dim),
            nn.ReLU(True),
            _conv(dim, 2 * dim, 4, 2),
            norm(2 * dim),
            nn.ReLU(True),
            _conv(2 * dim, 4 * dim, 4, 2),
            norm(4 * dim),
            nn.ReLU(True),
            *[_Residual(4 * dim) for _ in range(n_res)],
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(4 * dim, 2 * dim, 5),
            nn.GroupNorm(1, 2 * dim),
            nn.ReLU(True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(2 * dim, dim, 5),
            nn.GroupNorm(1, dim),
            nn.ReLU(True),
            _conv(dim, 3, 7),
            nn.Tanh(),
        )
        self.in_channels = in_channels

    def forward(self, x: Tensor, x_target: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"AdvFaces generator needs H and W divisible by 4; got {h}x{w}")
        inp = x if self.in_channels == 3 else torch.cat([x, x_target], dim=1)
        return self.decoder(self.encoder(inp))


def apply_perturbation(x: Tensor, delta: Tensor) -> Tensor:
    """``x_adv = 2·clip((x + 1)/2 + δ, 0, 1) − 1``: δ added in [0, 1] units (official ``advfaces.py``)."""
    return 2.0 * ((x + 1.0) / 2.0 + delta).clamp(0.0, 1.0) - 1.0


class AdvFacesDiscriminator(nn.Module):
    """PatchGAN logits ``(N, 1, H/32, W/32)`` of ``x`` in [-1, 1].

    Args:
        dim: channels of the first layer (official 32), doubled per layer.
        n_layers: stride-2 layers (official 5).
    """

    def __init__(self, *, dim: int = 32, n_layers: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n_layers):
            cout = dim * 2**i
            layers.append(_conv(cin, cout, 4, 2))
            if i >= 2:
                layers += [nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
