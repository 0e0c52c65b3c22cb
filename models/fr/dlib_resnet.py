"""dlib's 128-d face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in torch.

The architecture follows dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``)
and, for the layer names, face-api's ``faceRecognitionNet`` (which ports the
same network to TF.js)::

    con<32,7,7,2,2> -> affine -> relu -> max_pool<3,3,2,2>
    -> 3 x ares<32> -> ares_down<64> + 3 x ares<64> -> ares_down<128> + 2 x ares<128>
    -> ares_down<256> + 2 x ares<256> -> ares_down<256>
    -> avg_pool_everything -> fc_no_bias<128>

dlib conventions kept here: stride-2 convolutions and all pools use no
padding ("valid"), stride-1 3x3 convolutions pad 1; every convolution has a
bias and is followed by a per-channel ``affine`` (scale and shift, the frozen
batch norm); a residual sum of tensors of different sizes (``add_prev``) is
taken at the larger size with the smaller one zero-filled at the end of each
dimension (channels, bottom rows, right columns).

Parameter names mirror face-api's TF.js manifest (``conv32_1/conv1/conv/filters``
becomes ``conv32_1.conv1.conv.weight``), so :func:`state_dict_from_tfjs` is a
renaming plus layout transposes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DLIB_INPUT_SIZE = 150
# dlib input_rgb_image_sized<150>: (pixel - avg) / 256, pixel in [0, 255], RGB.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
DLIB_PIXEL_DIVISOR = 256.0


class Affine(nn.Module):
    """dlib ``affine`` layer: per-channel ``x * weight + bias`` on ``(N, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConvAffine(nn.Module):
    """Convolution (with bias) followed by :class:`Affine` and an optional ReLU.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: square kernel size.
        stride: 1 (padding ``kernel // 2``) or 2 (no padding), as dlib's ``con_``.
        relu: apply ReLU at the end.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, *, relu: bool) -> None:
        super().__init__()
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=True)
        self.scale = Affine(out_ch)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale(self.conv(x))
        return F.relu(x) if self.relu else x


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: sum at the larger of both sizes, zero-filling the smaller at the end.

    Args:
        a, b: ``(N, C, H, W)`` tensors with the same ``N``.

    Returns:
        ``(N, max C, max H, max W)``.
    """
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        pad = (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1])
        return F.pad(t, pad) if any(pad) else t

    return grow(a) + grow(b)


class Residual(nn.Module):
    """dlib ``ares`` / ``ares_down`` block: ``relu(block(x) + shortcut(x))``.

    ``block`` is ConvAffine(3x3, stride) -> ReLU -> ConvAffine(3x3, 1); the
    shortcut is the identity, or a 2x2 average pool for the down blocks
    (channels zero-filled by :func:`add_prev`).

    Args:
        in_ch: input channels.
        out_ch: output channels.
        down: stride-2 block with pooled shortcut.
    """

    def __init__(self, in_ch: int, out_ch: int, *, down: bool = False) -> None:
        super().__init__()
        self.down = down
        self.conv1 = ConvAffine(in_ch, out_ch, 3, 2 if down else 1, relu=True)
        self.conv2 = ConvAffine(out_ch, out_ch, 3, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(out, shortcut))


class DlibResNet(nn.Module):
    """dlib face-recognition ResNet-29 (about 5.6 M parameters).

    Input: ``(N, 3, 150, 150)`` already normalised the dlib way,
    ``(rgb_0_255 - DLIB_MEAN_RGB) / 256``. Output: ``(N, 128)`` raw
    descriptors (dlib does not normalise them; the wrapper does).
    """

    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv32_down = ConvAffine(3, 32, 7, 2, relu=True)
        self.conv32_1 = Residual(32, 32)
        self.conv32_2 = Residual(32, 32)
        self.conv32_3 = Residual(32, 32)
        self.conv64_down = Residual(32, 64, down=True)
        self.conv64_1 = Residual(64, 64)
        self.conv64_2 = Residual(64, 64)
        self.conv64_3 = Residual(64, 64)
        self.conv128_down = Residual(64, 128, down=True)
        self.conv128_1 = Residual(128, 128)
        self.conv128_2 = Residual(128, 128)
        self.conv256_down = Residual(128, 256, down=True)
        self.conv256_1 = Residual(256, 256)
        self.conv256_2 = Residual(256, 256)
        self.conv256_down_out = Residual(256, 256, down=True)
        self.fc = nn.Linear(256, embedding_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv32_down(x), 3, 2)
        for name in (
            "conv32_1", "conv32_2", "conv32_3",
            "conv64_down", "conv64_1", "conv64_2", "conv64_3",
            "conv128_down", "conv128_1", "conv128_2",
            "conv256_down", "conv256_1", "conv256_2", "conv256_down_out",
        ):  # fmt: skip
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def tfjs_name_to_torch(name: str) -> str:
    """Map a face-api manifest name to a :class:`DlibResNet` state-dict key.

    ``conv32_1/conv1/conv/filters`` -> ``conv32_1.conv1.conv.weight``;
    ``.../scale/weights`` -> ``.scale.weight``; ``fc`` -> ``fc.weight``.
    """
    if name == "fc":
        return "fc.weight"
    parts = name.split("/")
    leaf = {"filters": "weight", "bias": "bias", "weights": "weight", "biases": "bias"}
    if parts[-1] not in leaf:
        raise KeyError(f"unexpected face-api weight name '{name}'")
    return ".".join(parts[:-1] + [leaf[parts[-1]]])


def state_dict_from_tfjs(arrays: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert face-api tensors (TF layouts) into a :class:`DlibResNet` state dict.

    Args:
        arrays: manifest name -> float tensor in TF layout (conv filters
            ``(kh, kw, in, out)``, ``fc`` ``(256, 128)``).

    Returns:
        State dict for ``DlibResNet().load_state_dict(..., strict=True)``
        (conv weights ``(out, in, kh, kw)``, ``fc.weight`` ``(128, 256)``).
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in arrays.items():
        key = tfjs_name_to_torch(name)
        if name == "fc":
            t = t.t()
        elif name.endswith("/filters"):
            t = t.permute(3, 2, 0, 1)
        out[key] = t.contiguous().float()
    return out


# ---------------------------------------------------------------------------------------
# Weight readers: face-api TF.js manifest (uint8-quantised) and dlib's own .dat (float32).


def read_tfjs_weights(manifest: str | Path) -> dict[str, torch.Tensor]:
    """Read a TF.js ``*-weights_manifest.json`` and its ``.bin`` shards.

    Quantised entries (``quantization: {dtype: uint8|uint16, scale, min}``) are
    de-quantised as TF.js does: ``q * scale + min``.

    Args:
        manifest: path of the manifest; shards are resolved relative to it.

    Returns:
        name -> float32 tensor in the manifest's (TF) layout.
    """
    manifest = Path(manifest)
    groups = json.loads(manifest.read_text())
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        buf = b"".join((manifest.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"], dtype=np.int64))
            q = w.get("quantization")
            if q:
                dtype = {"uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                raw = np.frombuffer(buf, dtype, n, offset)
                a = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                if w["dtype"] != "float32":
                    raise ValueError(f"{manifest}: weight '{w['name']}' has dtype {w['dtype']}; expected float32")
                a = np.frombuffer(buf, np.float32, n, offset).copy()
            offset += n * (np.dtype(q["dtype"]).itemsize if q else 4)
            out[w["name"]] = torch.from_numpy(a.reshape(w["shape"]))
        if offset != len(buf):
            raise ValueError(f"{manifest}: {len(buf) - offset} bytes of shard data unread; manifest/shard mismatch")
    return out


class _DlibReader:
    """Minimal reader for dlib's serialisation (``dlib/serialize.h``, ``dnn/tensor.h``).

    Integers: one control byte (low nibble = byte count, bit 7 = sign) then the
    magnitude little-endian. Tensors (version 2): version, num_samples, k, nr,
    nc as integers, then raw little-endian float32 values.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data

    def int_at(self, pos: int) -> tuple[int, int]:
        ctrl = self.data[pos]
        n = ctrl & 0x0F
        v = int.from_bytes(self.data[pos + 1 : pos + 1 + n], "little")
        return (-v if ctrl & 0x80 else v), pos + 1 + n

    def tensor_at(self, pos: int) -> tuple[np.ndarray, int]:
        version, pos = self.int_at(pos)
        if version != 2:
            raise ValueError(f"dlib tensor at byte {pos}: version {version}, expected 2")
        dims = []
        for _ in range(4):
            d, pos = self.int_at(pos)
            dims.append(d)
        n = int(np.prod(dims))
        return np.frombuffer(self.data, "<f4", n, pos).copy(), pos + 4 * n


# Layer markers as serialised: string length byte, then the version string.
_DLIB_LAYER = re.compile(rb"\x05con_4|\x07affine_|\x08affine_2|\x04fc_2|\x07bn_con2")


def read_dlib_dat(data: bytes) -> dict[str, torch.Tensor]:
    """Convert ``dlib_face_recognition_resnet_model_v1.dat`` into a :class:`DlibResNet` state dict.

    dlib serialises the network input-first, so the 29 ``con_`` layers (params =
    filters ``(out, in, kh, kw)`` then biases), each followed by its ``affine_``
    (params = gamma then beta), appear in the order of :class:`DlibResNet`'s
    modules, and ``fc_`` (params ``(256, 128)``, no bias) comes last. Each
    tensor's data is skipped after reading, so markers are never searched for
    inside weights.

    Args:
        data: bytes of the .dat file.

    Returns:
        State dict for ``DlibResNet().load_state_dict(..., strict=True)``.

    Raises:
        ValueError: the file does not hold this network (layer count, sizes).
    """
    reader = _DlibReader(data)
    layers: list[tuple[str, np.ndarray]] = []
    pos = 0
    while (m := _DLIB_LAYER.search(data, pos)) is not None:
        kind = m.group()[1:].decode()
        if kind == "bn_con2":
            raise ValueError("dlib .dat holds training-time bn_con layers; expected the affine (test) network")
        p = m.end()
        if kind == "fc_2":  # num_outputs, num_inputs precede the params tensor
            _, p = reader.int_at(p)
            _, p = reader.int_at(p)
        params, pos = reader.tensor_at(p)
        layers.append((kind, params))
    template = DlibResNet().state_dict()
    prefixes = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(layers) != 2 * len(prefixes) + 1:
        raise ValueError(f"dlib .dat has {len(layers)} parameter layers; dlib_resnet needs {2 * len(prefixes) + 1}")
    out: dict[str, torch.Tensor] = {}
    it = iter(layers)
    for prefix in prefixes:
        (kind, conv), (kind2, affine) = next(it), next(it)
        w = template[f"{prefix}.conv.weight"]
        c = w.shape[0]
        if kind != "con_4" or not kind2.startswith("affine") or conv.size != w.numel() + c or affine.size != 2 * c:
            raise ValueError(f"dlib .dat layer for '{prefix}' has unexpected kind/size ({kind}, {conv.size})")
        out[f"{prefix}.conv.weight"] = torch.from_numpy(conv[: w.numel()].reshape(w.shape))
        out[f"{prefix}.conv.bias"] = torch.from_numpy(conv[w.numel() :])
        out[f"{prefix}.scale.weight"] = torch.from_numpy(affine[:c])
        out[f"{prefix}.scale.bias"] = torch.from_numpy(affine[c:])
    kind, fc = next(it)
    if kind != "fc_2" or fc.size != template["fc.weight"].numel():
        raise ValueError(f"dlib .dat final layer is {kind} with {fc.size} values; expected fc_2 with 256x128")
    out["fc.weight"] = torch.from_numpy(fc.reshape(256, -1).T.copy())
    return out
