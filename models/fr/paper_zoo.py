"""The paper's FR zoo, checkpoint-compatible with the public weights.

Seven registry entries (ErasableMask Sec. IV-A.4 "Target models", following
the Adv-Makeup → AMT-GAN → CLIP2Protect → DiffAM harness), each state-dict
compatible with a public checkpoint:

- ``ir152``: face.evoLVe ``IR_152((112, 112))`` (:mod:`.irse`), 112×112;
- ``irse50``: ``irse.Backbone(50, 0.6, 'ir_se')`` (:mod:`.irse`), 112×112;
- ``mobile_face``: ``irse.MobileFaceNet(512)`` (:mod:`.mobilefacenet`), 112×112;
- ``facenet``: facenet-pytorch ``InceptionResnetV1(num_classes=8631)``
  (:mod:`.inception_resnet_v1`), 160×160, 512-d pre-logits embedding;
- ``arcface_r100`` / ``cosface_r100`` / ``arcface_r50``: insightface
  arcface_torch ``iresnet100`` / ``iresnet100`` / ``iresnet50``
  (:mod:`.iresnet`), 112×112.

Preprocessing: RGB in [-1, 1], the whole image bilinearly resized, no crop,
no further normalisation. For the first four that is the harness convention
their published thresholds were calibrated with; for the IResNets it is
arcface_torch's ``(x/255 - 0.5)/0.5``, which *is* [-1, 1]. Embeddings are
always L2-normalised by the wrapper (``ir152``'s raw output is not).

Weights are not downloadable by URL (Google Drive / OneDrive only, no
published sha256), so every entry's :class:`WeightsSource` is ``kind="path"``
with a file name relative to ``weights_home(name)``
(``~/.cache/erasablemask/weights/<name>/``) and a note saying where to get it.
The registry's weights contract applies: ``build(name)`` loads that file or
raises ``WeightsUnavailable`` (with the note); ``build(name, weights=PATH)``
loads ``PATH``; ``build(name, weights="random")`` is the randomly initialised
architecture (PyTorch default init; seed it yourself).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from erasablemask.models.fr.inception_resnet_v1 import InceptionResnetV1
from erasablemask.models.fr.iresnet import iresnet50, iresnet100
from erasablemask.models.fr.irse import ir_152, ir_se_50
from erasablemask.models.fr.mobilefacenet import MobileFaceNet
from erasablemask.models.fr.registry import (
    RANDOM_INIT,
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    WeightsSource,
    register,
    resolve_weights,
)
from erasablemask.models.state_dicts import StateDictMismatch, load_state_dict_checked, read_state_dict, strip_prefix

__all__ = ["WeightsMismatchError", "load_backbone_weights", "PAPER_ZOO", "PUBLISHED_THRESHOLDS"]

# Cosine thresholds at FAR 0.1 / 0.01 / 0.001, calibrated on LFW; identical
# `th_dict` in the test scripts of Adv-Makeup, AMT-GAN, CLIP2Protect and DiffAM.
PUBLISHED_THRESHOLDS: dict[str, dict[float, float]] = {
    "ir152": {0.1: 0.094632, 0.01: 0.166788, 0.001: 0.227922},
    "irse50": {0.1: 0.144840, 0.01: 0.241045, 0.001: 0.312703},
    "facenet": {0.1: 0.256587, 0.01: 0.409131, 0.001: 0.591191},
    "mobile_face": {0.1: 0.183635, 0.01: 0.301611, 0.001: 0.380878},
}
_PUBLISHED_SOURCE = (
    "published: LFW-calibrated cosine thresholds (th_dict) shipped with Adv-Makeup, AMT-GAN, "
    "CLIP2Protect and DiffAM; valid for the zoo's public weights and [-1,1] whole-image resize"
)
_ZOO_NOTE = (
    "{file} inside AMT-GAN's assets.zip (assets/models/{file}; FR weights originally released with "
    "Adv-Makeup): https://drive.google.com/file/d/1Vuek5-YTZlYGoeoqyM5DlvnaXMeii4O8/view . "
    "{extra}Put it in weights_home('{name}') (~/.cache/erasablemask/weights/{name}/ unless "
    "$ERASABLEMASK_HOME is set) or pass build('{name}', weights=PATH); weights='random' builds a "
    "randomly initialised backbone."
)
_FACENET_EXTRA = (
    "facenet-pytorch's own VGGFace2 file (https://github.com/timesler/facenet-pytorch/releases/download/"
    "v2.2.9/20180402-114759-vggface2.pt) has the same names and shapes and loads too, but the published "
    "thresholds were calibrated with the assets.zip file. "
)
_INSIGHTFACE_NOTE = (
    "backbone.pth of {ckpt} from the insightface arcface_torch model zoo "
    "(recognition/arcface_torch/README.md: OneDrive https://1drv.ms/u/s!AswpsDO2toNKq0lWY69vN58GR6mw?e=p9Ov5d, "
    "Baidu https://pan.baidu.com/s/1CL-l4zWqsI1oDuEEYVhj-g code e8pw; non-commercial research only). "
    "Put it in weights_home('{name}') (~/.cache/erasablemask/weights/{name}/ unless $ERASABLEMASK_HOME "
    "is set) or pass build('{name}', weights=PATH); weights='random' builds a randomly initialised "
    "backbone. No published thresholds: run `erasablemask fr calibrate {name}`."
)
# The harness convention; for insightface IResNets (x/255-0.5)/0.5 is this same [-1, 1] input.
_P112 = Preprocessing(size=(112, 112), resize="bilinear", scale="[-1,1]")
_P160 = Preprocessing(size=(160, 160), resize="bilinear", scale="[-1,1]")


class WeightsMismatchError(StateDictMismatch):
    """A weights file does not match the backbone's parameter/buffer names and shapes."""


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a public checkpoint into ``backbone`` strictly.

    Reads ``.pth`` / ``.pt`` with ``torch.load(weights_only=True)`` or
    ``.safetensors``, strips a DataParallel ``module.`` prefix, and checks
    names and shapes before loading. The one tolerance: BatchNorm
    ``num_batches_tracked`` buffers missing from the file (checkpoints saved
    before PyTorch 0.4.1, or re-exported ones, lack them) are kept from the
    model; they only count training steps and do not affect the forward pass.

    Args:
        backbone: the architecture (e.g. ``FaceRecognizer.backbone``).
        path: the weights file.

    Returns:
        ``backbone``, with the weights loaded, for chaining.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable state dict.
        WeightsMismatchError: missing, unexpected or mis-shaped keys, all listed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist; check the path (see the model's spec.weights.note)")
    raw = read_state_dict(path)
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        odd = sorted(k for k, v in raw.items() if not isinstance(v, torch.Tensor))
        raise ValueError(f"weights file '{path}' holds non-tensor entries {odd[:5]}, not a state dict of tensors; "
                         "extract the backbone's state_dict() and save that")
    return load_state_dict_checked(
        backbone, strip_prefix(raw, "module."), source=f"weights file '{path}'",
        fix="Check that the file is the checkpoint named in the model's spec.weights.note",
        keep_missing=lambda key: key.endswith("num_batches_tracked"), error=WeightsMismatchError,
    )


def _make(spec: FRSpec, make_backbone: Callable[[], nn.Module], weights: str | Path | None) -> FaceRecognizer:
    path = resolve_weights(spec, weights)  # None for RANDOM_INIT; raises WeightsUnavailable with the note
    backbone = make_backbone()
    if path is not None:
        load_backbone_weights(backbone, path)
    return FaceRecognizer(backbone, spec)


def _zoo_spec(name: str, family: str, pre: Preprocessing, file: str) -> FRSpec:
    return FRSpec(
        name=name,
        family=family,
        embedding_size=512,
        preprocessing=pre,
        weights=WeightsSource(kind="path", location=file, note=_ZOO_NOTE.format(file=file, name=name, extra=_FACENET_EXTRA if name == "facenet" else "")),
        thresholds=dict(PUBLISHED_THRESHOLDS[name]),
        threshold_source=_PUBLISHED_SOURCE,
        role_hint="paper_zoo",
    )


def _insightface_spec(name: str, ckpt: str) -> FRSpec:
    return FRSpec(
        name=name,
        family="iresnet",
        embedding_size=512,
        preprocessing=_P112,
        weights=WeightsSource(kind="path", location="backbone.pth", note=_INSIGHTFACE_NOTE.format(ckpt=ckpt, name=name)),
        role_hint="paper_zoo",
    )


# name -> (spec, backbone constructor); the registrations below read from it.
PAPER_ZOO: dict[str, tuple[FRSpec, Callable[[], nn.Module]]] = {
    "ir152": (_zoo_spec("ir152", "ir", _P112, "ir152.pth"), lambda: ir_152(112, drop_ratio=0.4)),
    "irse50": (
        _zoo_spec("irse50", "ir_se", _P112, "irse50.pth"),
        lambda: ir_se_50(112, drop_ratio=0.6, l2_normalize=True),
    ),
    "mobile_face": (_zoo_spec("mobile_face", "mobilefacenet", _P112, "mobile_face.pth"), lambda: MobileFaceNet(512)),
    "facenet": (_zoo_spec("facenet", "inception_resnet_v1", _P160, "facenet.pth"), lambda: InceptionResnetV1(8631)),
    "arcface_r100": (_insightface_spec("arcface_r100", "ms1mv3_arcface_r100_fp16"), iresnet100),
    "cosface_r100": (_insightface_spec("cosface_r100", "glint360k_cosface_r100_fp16_0.1"), iresnet100),
    "arcface_r50": (_insightface_spec("arcface_r50", "ms1mv3_arcface_r50_fp16"), iresnet50),
}


def _factory(name: str) -> Callable[[str | Path | None], FaceRecognizer]:
    spec, make = PAPER_ZOO[name]

    def factory(weights: str | Path | None = None) -> FaceRecognizer:
        return _make(spec, make, weights)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"Build '{name}' ({spec.family}); weights: None (the file in weights_home), a path, "
        f"or {RANDOM_INIT!r} (random init)."
    )
    return factory


for _name, (_spec, _) in PAPER_ZOO.items():
    register(_spec)(_factory(_name))
