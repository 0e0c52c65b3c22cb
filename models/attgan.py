"""AttGAN generator and discriminator (paper §IV-A; its ref. [40]).

Architecture and parameter names follow AttGAN-PyTorch (elvisyjlin), so its
public checkpoints load with ``strict=True`` through
:func:`load_attgan_checkpoint`:

- ``G_enc``: ``enc_layers`` x (4x4 stride-2 conv, norm, LeakyReLU); widths
  ``min(enc_dim * 2**i, 1024)``; :meth:`AttGANGenerator.encode` returns every
  layer's feature map.
- ``G_dec``: ``dec_layers`` x (4x4 stride-2 transposed conv, norm, ReLU), the
  last one to 3 channels with tanh. The attribute code is tiled onto the
  bottleneck; after decoder layer ``i < shortcut_layers`` the encoder map of
  the same size is concatenated (shortcut), and after ``i < inject_layers``
  the attribute code is tiled again (inject).
- ``D``: ``n_layers`` x (4x4 stride-2 conv, InstanceNorm, LeakyReLU), then
  two MLP heads: real/fake (``fc_adv``, D_G) and attributes (``fc_cls``, D_att).

The generator's weights do not depend on ``img_size`` (only the tiling of the
attribute code does); the discriminator's fully connected heads do.

Images are ``(N, 3, H, W)`` in ``[-1, 1]``. Attribute codes ``a`` are
``(N, n_attrs)`` floats already coded for the generator (AttGAN-PyTorch uses
``(label * 2 - 1) * 0.5``, i.e. ±0.5); coding is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from erasablemask.models.image_checks import check_image_range
from erasablemask.models.state_dicts import load_state_dict_checked, read_state_dict, strip_prefix

__all__ = [
    "MAX_DIM", "LRELU_SLOPE", "AttGANGenerator", "AttGANDiscriminator", "check_attribute_code",
    "load_attgan_checkpoint",
]

MAX_DIM = 1024  # AttGAN-PyTorch caps every width at 64 * 16
LRELU_SLOPE = 0.01  # nn.LeakyReLU() default, as in AttGAN-PyTorch (the TF original uses 0.2)
_NORMS = ("batchnorm", "instancenorm", "none")
_ACTIS = ("relu", "lrelu", "tanh", "none")


def _norm(kind: str, n: int) -> list[nn.Module]:
    if kind == "batchnorm":
        return [nn.BatchNorm2d(n)]
    if kind == "instancenorm":
        return [nn.InstanceNorm2d(n, affine=True)]
    return []


def _acti(kind: str) -> list[nn.Module]:
    return {"relu": [nn.ReLU()], "lrelu": [nn.LeakyReLU(LRELU_SLOPE)], "tanh": [nn.Tanh()], "none": []}[kind]


def _check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {value!r}")


class ConvBlock(nn.Module):
    """4x4 stride-2 (transposed) conv, optional norm, activation: ``self.layers`` (a Sequential).

    The conv has a bias only without a norm, as in AttGAN-PyTorch's
    ``Conv2dBlock``/``ConvTranspose2dBlock`` (parameter names ``layers.0.*``,
    ``layers.1.*``). Halves (conv) or doubles (transposed) the spatial size.
    """

    def __init__(self, n_in: int, n_out: int, *, transposed: bool, norm: str, acti: str) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers = [conv(n_in, n_out, 4, stride=2, padding=1, bias=norm == "none")]
        self.layers = nn.Sequential(*layers, *_norm(norm, n_out), *_acti(acti))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Linear layer and activation (no norm), named ``layers.0.*`` as in AttGAN-PyTorch."""

    def __init__(self, n_in: int, n_out: int, *, acti: str) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_in, n_out), *_acti(acti))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _check_size(img_size: int, n_layers: int, who: str) -> int:
    f_size = img_size // 2**n_layers
    if img_size % 2**n_layers or f_size < 1:
        raise ValueError(
            f"{who}: `img_size`={img_size} must be a multiple of 2**n_layers={2**n_layers}; "
            f"change img_size or the number of layers"
        )
    return f_size


def check_attribute_code(a: Tensor, n_attrs: int, n: int, name: str = "a") -> None:
    """Raise ``ValueError`` unless ``a`` is a float ``(n, n_attrs)`` attribute code."""
    if not isinstance(a, Tensor) or a.dim() != 2 or a.shape != (n, n_attrs) or not torch.is_floating_point(a):
        got = f"shape {tuple(a.shape)}, dtype {a.dtype}" if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(
            f"`{name}` must be a float (N={n}, n_attrs={n_attrs}) attribute code "
            f"(AttGAN-PyTorch codes labels as (label*2-1)*0.5); got {got}"
        )


class AttGANGenerator(nn.Module):
    """AttGAN generator: encoder ``G_enc`` and attribute-conditioned decoder ``G_dec``.

    Args:
        enc_dim, enc_layers: encoder base width and depth (widths ``min(enc_dim*2**i, 1024)``).
        dec_dim, dec_layers: decoder base width and depth (must equal ``enc_layers``).
        shortcut_layers: decoder layers followed by an encoder shortcut (capped at ``dec_layers-1``).
        inject_layers: decoder layers followed by a re-tiled attribute code (capped likewise).
        n_attrs: length of the attribute code.
        img_size: square image side the attribute tiling is built for (multiple of ``2**enc_layers``).
        enc_norm, dec_norm: "batchnorm" (AttGAN-PyTorch), "instancenorm" or "none".
        enc_acti, dec_acti: "lrelu" / "relu" (AttGAN-PyTorch), "tanh" or "none".
    """

    def __init__(
        self,
        *,
        enc_dim: int = 64,
        enc_layers: int = 5,
        dec_dim: int = 64,
        dec_layers: int = 5,
        shortcut_layers: int = 1,
        inject_layers: int = 1,
        n_attrs: int = 13,
        img_size: int = 128,
        enc_norm: str = "batchnorm",
        dec_norm: str = "batchnorm",
        enc_acti: str = "lrelu",
        dec_acti: str = "relu",
    ) -> None:
        super().__init__()
        if enc_layers != dec_layers:
            raise ValueError(f"`dec_layers` ({dec_layers}) must equal `enc_layers` ({enc_layers}) for the shortcuts")
        for value, choices, name in ((enc_norm, _NORMS, "enc_norm"), (dec_norm, _NORMS, "dec_norm"),
                                     (enc_acti, _ACTIS, "enc_acti"), (dec_acti, _ACTIS, "dec_acti")):
            _check_choice(value, choices, name)
        self.config = dict(enc_dim=enc_dim, enc_layers=enc_layers, dec_dim=dec_dim, dec_layers=dec_layers,
                           shortcut_layers=shortcut_layers, inject_layers=inject_layers, n_attrs=n_attrs,
                           img_size=img_size, enc_norm=enc_norm, dec_norm=dec_norm, enc_acti=enc_acti,
                           dec_acti=dec_acti)
        self.n_attrs = n_attrs
        self.img_size = img_size
        self.shortcut_layers = min(shortcut_layers, dec_layers - 1)
        self.inject_layers = min(inject_layers, dec_layers - 1)
        self.f_size = _check_size(img_size, enc_layers, "AttGANGenerator")

        widths = [min(enc_dim * 2**i, MAX_DIM) for i in range(enc_layers)]
        self.enc_widths = widths
        self.enc_layers = nn.ModuleList(
            ConvBlock(n_in, n_out, transposed=False, norm=enc_norm, acti=enc_acti)
            for n_in, n_out in zip([3, *widths[:-1]], widths)
        )
        layers: list[nn.Module] = []
        n_in = widths[-1] + n_attrs
        for i in range(dec_layers - 1):
            n_out = min(dec_dim * 2 ** (dec_layers - i - 1), MAX_DIM)
            layers.append(ConvBlock(n_in, n_out, transposed=True, norm=dec_norm, acti=dec_acti))
            n_in = n_out
            if i < self.shortcut_layers:
                n_in += widths[dec_layers - 2 - i]  # == n_out // 2 in AttGAN-PyTorch's configs
            if i < self.inject_layers:
                n_in += n_attrs
        layers.append(ConvBlock(n_in, 3, transposed=True, norm="none", acti="tanh"))
        self.dec_layers = nn.ModuleList(layers)

    def encode(self, x: Tensor) -> list[Tensor]:
        """``G_enc``: every layer's feature map ``[ft_1, ..., ft_n]`` of the image ``x`` ((N, 3, H, W) in [-1, 1])."""
        check_image_range(x, "x")
        return self.encode_unchecked(x)

    def encode_unchecked(self, x: Tensor) -> list[Tensor]:
        """:meth:`encode` without the range check, for callers that checked already."""
        zs = []
        for layer in self.enc_layers:
            x = layer(x)
            zs.append(x)
        return zs

    def _tile(self, a: Tensor, size: int) -> Tensor:
        return a.view(a.size(0), -1, 1, 1).expand(-1, -1, size, size)

    def decode_layers(
        self,
        zs: list[Tensor],
        a: Tensor,
        fuse: Callable[[int, Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """``G_dec`` with a per-layer hook.

        Args:
            zs: encoder features ``[z_1, ..., z_n]`` as returned by :meth:`encode`.
            a: ``(N, n_attrs)`` attribute code.
            fuse: optional ``fuse(i, h) -> h'`` applied to decoder layer ``i``'s block
                output ``h`` before its shortcut/inject concatenation (information
                injection, §IV-C, fuses the two branches here).

        Returns:
            ``(image, hs)``: the decoded ``(N, 3, H, W)`` image in [-1, 1] and the
            (possibly fused) block outputs of every decoder layer, ``hs[-1] is image``.
        """
        check_attribute_code(a, self.n_attrs, zs[-1].shape[0])
        n = len(self.dec_layers)
        z = torch.cat([zs[-1], self._tile(a, zs[-1].shape[-1])], dim=1)
        hs = []
        for i, layer in enumerate(self.dec_layers):
            z = layer(z)
            if fuse is not None:
                z = fuse(i, z)
            hs.append(z)
            if i < self.shortcut_layers:
                z = torch.cat([z, zs[n - 2 - i]], dim=1)
            if i < self.inject_layers:
                z = torch.cat([z, self._tile(a, z.shape[-1])], dim=1)
        return z, hs

    def decode(self, zs: list[Tensor], a: Tensor) -> Tensor:
        """``G_dec(zs, a)``: the ``(N, 3, H, W)`` image in [-1, 1] decoded from features ``zs`` with code ``a``."""
        return self.decode_layers(zs, a)[0]

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        """``G_dec(G_enc(x), a)``: ``x`` (N, 3, H, W) in [-1, 1] edited towards attribute code ``a`` (N, n_attrs)."""
        return self.decode(self.encode(x), a)


class AttGANDiscriminator(nn.Module):
    """AttGAN discriminator D with a real/fake head D_G and an attribute head D_att.

    Args:
        dim, n_layers: conv base width and depth (widths ``min(dim*2**i, 1024)``).
        n_attrs: number of attribute logits.
        img_size: square input side; sets the heads' input size ``width * (img_size/2**n_layers)**2``.
        fc_dim: hidden width of both heads.
        norm: conv norm, "instancenorm" (AttGAN-PyTorch), "batchnorm" or "none".
        fc_acti: heads' hidden activation, "relu" (AttGAN-PyTorch's train.py) or "lrelu".
    """

    def __init__(
        self,
        *,
        dim: int = 64,
        n_layers: int = 5,
        n_attrs: int = 13,
        img_size: int = 128,
        fc_dim: int = 1024,
        norm: str = "instancenorm",
        fc_acti: str = "relu",
    ) -> None:
        super().__init__()
        _check_choice(norm, _NORMS, "norm")
        _check_choice(fc_acti, _ACTIS, "fc_acti")
        self.f_size = _check_size(img_size, n_layers, "AttGANDiscriminator")
        if norm == "instancenorm" and self.f_size == 1:
            raise ValueError(
                f"AttGANDiscriminator: instance norm needs the last map larger than 1x1; "
                f"img_size={img_size} with n_layers={n_layers} gives 1x1 — use fewer layers or a larger img_size"
            )
        self.config = dict(dim=dim, n_layers=n_layers, n_attrs=n_attrs, img_size=img_size, fc_dim=fc_dim,
                           norm=norm, fc_acti=fc_acti)
        self.img_size = img_size
        widths = [min(dim * 2**i, MAX_DIM) for i in range(n_layers)]
        self.conv = nn.Sequential(*(
            ConvBlock(n_in, n_out, transposed=False, norm=norm, acti="lrelu")
            for n_in, n_out in zip([3, *widths[:-1]], widths)
        ))
        n_feat = widths[-1] * self.f_size**2
        self.fc_adv = nn.Sequential(LinearBlock(n_feat, fc_dim, acti=fc_acti), LinearBlock(fc_dim, 1, acti="none"))
        self.fc_cls = nn.Sequential(LinearBlock(n_feat, fc_dim, acti=fc_acti),
                                    LinearBlock(fc_dim, n_attrs, acti="none"))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Score images ``x`` ((N, 3, img_size, img_size) in [-1, 1]).

        Returns:
            ``(d_g, d_att)``: ``(N, 1)`` real/fake logits and ``(N, n_attrs)`` attribute logits.
        """
        check_image_range(x, "x")
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"`x` must be {self.img_size}x{self.img_size} for this discriminator; got "
                f"{tuple(x.shape[-2:])} — resize the images or build D with img_size={x.shape[-1]}"
            )
        h = self.conv(x).flatten(1)
        return self.fc_adv(h), self.fc_cls(h)


def _read_checkpoint(source: str | Path | Mapping[str, object]) -> Mapping[str, object]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist; pass a .pth/.pt/.safetensors file or a state dict")
    return read_state_dict(path)


def _section(ckpt: Mapping[str, object], key: str, own_prefix: str) -> dict[str, Tensor] | None:
    """The state dict for ``key`` ('G' or 'D'): nested, flat 'G.'-prefixed, or bare (guessed by ``own_prefix``)."""
    if isinstance(ckpt.get(key), Mapping):
        sd = dict(ckpt[key])
    elif any(k.startswith(key + ".") for k in ckpt):
        sd = {k[len(key) + 1:]: v for k, v in ckpt.items() if k.startswith(key + ".")}
    elif not ({"G", "D"} & set(ckpt)) and any(k.removeprefix("module.").startswith(own_prefix) for k in ckpt):
        sd = dict(ckpt)
    else:
        return None
    return strip_prefix(sd, "module.")  # nn.DataParallel's prefix


def load_attgan_checkpoint(
    path_or_state_dict: str | Path | Mapping[str, object],
    *,
    generator: AttGANGenerator | None = None,
    discriminator: AttGANDiscriminator | None = None,
) -> None:
    """Load AttGAN-PyTorch weights into ``generator`` and/or ``discriminator`` (strict) to start stage 1.

    Accepts AttGAN-PyTorch's ``torch.save`` dicts (``{'G', 'D', 'optim_G', 'optim_D'}``
    or ``{'G'}`` from ``saveG``; read with ``weights_only=True``), a bare state
    dict of G or D, a flat ``.safetensors`` file (bare, or keys prefixed ``G.``/``D.``),
    or an in-memory mapping of any of these. The ``module.`` prefix left by
    ``nn.DataParallel`` is removed.

    Raises:
        ValueError: the file is missing/unreadable, a requested part is absent,
            or keys are missing, unexpected or mis-shaped (all listed).
    """
    if generator is None and discriminator is None:
        raise ValueError("load_attgan_checkpoint: pass generator=... and/or discriminator=... to load into")
    ckpt = _read_checkpoint(path_or_state_dict)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint holds a {type(ckpt).__name__}, not a state dict; pass AttGAN-PyTorch's "
                         "{'G': ..., 'D': ...} file or a bare state dict")
    for module, key, prefix in ((generator, "G", "enc_layers."), (discriminator, "D", "conv.")):
        if module is None:
            continue
        sd = _section(ckpt, key, prefix)
        if sd is None:
            raise ValueError(f"checkpoint has no {key} weights (top-level keys: {sorted(ckpt)[:8]}...); "
                             f"pass {'generator' if key == 'G' else 'discriminator'}=None or another file")
        load_state_dict_checked(
            module, sd, source=f"{key} checkpoint",
            fix="Build the model with the checkpoint's settings (widths, layers, shortcut/inject layers, "
                "n_attrs; img_size for D).",
        )
