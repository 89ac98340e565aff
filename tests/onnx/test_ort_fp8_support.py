"""What ONNX Runtime's CPU provider runs in FP8 (checked on onnxruntime 1.32; docs/onnx.md has the table).

Supported: QuantizeLinear / DequantizeLinear with FLOAT8E4M3FN per-tensor (opset 19 and 21), per-axis (weights),
blocked (opset 21), float32 and float16 inputs, Cast to/from FLOAT8E4M3FN. Not supported: bfloat16 inputs to
QuantizeLinear (NOT_IMPLEMENTED); MatMul on FP8 tensors is not valid ONNX at all (GEMMs read DequantizeLinear).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from recfx.ops.fp8 import static_quantize

FP8 = T.FLOAT8E4M3FN


def _session(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_type: int = T.FLOAT,
             y_type: int = T.FLOAT, opset: int = 21, shape: tuple[int, ...] = (2, 4)) -> ort.InferenceSession:
    inputs = [h.make_tensor_value_info("x", x_type, list(shape))] if "x" in nodes[0].input else []
    graph = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", y_type, list(shape))], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _qdq(opset: int = 21, x_type: int = T.FLOAT, scale_type: int = T.FLOAT) -> ort.InferenceSession:
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "zp"],
                                                                                 ["y"])]
    return _session(nodes, [h.make_tensor("s", scale_type, [], [0.5]), h.make_tensor("zp", FP8, [], [0.0])],
                    x_type, x_type, opset)


X = np.array([[1.0, -3.0, 1000.0, 0.3]] * 2, dtype=np.float32)
WANT = np.array([[1.0, -3.0, 224.0, 0.3125]] * 2, dtype=np.float32)  # saturated at 448 * 0.5, E4M3 rounding


@pytest.mark.parametrize("opset", [19, 21])
def test_per_tensor_qdq(opset: int) -> None:
    np.testing.assert_array_equal(_qdq(opset).run(None, {"x": X})[0], WANT)


def test_float16_inputs() -> None:
    got = _qdq(x_type=T.FLOAT16, scale_type=T.FLOAT16).run(None, {"x": X.astype(np.float16)})[0]
    np.testing.assert_array_equal(got, WANT.astype(np.float16))


def test_bfloat16_quantize_not_implemented() -> None:
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        _qdq(x_type=T.BFLOAT16, scale_type=T.BFLOAT16)


@pytest.mark.parametrize(("axis", "block"), [(0, 0), (1, 0), (1, 2)])
def test_weight_dequantize(axis: int, block: int) -> None:
    w = np.array([[1.0, 2.0, -3.0, 448.0], [0.5, 1.0, 1.0, 1.0]], dtype=np.float32)
    scale_shape = [2, 2] if block else [w.shape[axis]]
    scales = np.arange(1, 1 + int(np.prod(scale_shape)), dtype=np.float32).reshape(scale_shape) / 2
    attrs = {"axis": axis, **({"block_size": block} if block else {})}
    node = h.make_node("DequantizeLinear", ["w", "s", "zp"], ["y"], **attrs)
    inits = [h.make_tensor("w", FP8, [2, 4], w.ravel().tolist()), h.make_tensor("s", T.FLOAT, scale_shape,
             scales.ravel().tolist()), h.make_tensor("zp", FP8, scale_shape, [0.0] * scales.size)]
    full = np.repeat(scales, block, axis=1) if block else np.expand_dims(scales, 1 - axis)
    np.testing.assert_array_equal(_session([node], inits).run(None, {})[0], w * full)


def test_quantize_matches_recfx_on_random_data() -> None:
    """ORT rounds the float32 quotient x / s; recfx rounds the exact quotient: the same FP8 code, or one step apart
    on a quotient that lands on a rounding midpoint in float32."""
    x = torch.randn(64, 256) * 3
    scale = torch.tensor(0.0123)
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "zp"], ["y"])]
    session = _session(nodes, [h.make_tensor("s", T.FLOAT, [], [float(scale)]), h.make_tensor("zp", FP8, [], [0.0])],
                       y_type=FP8, shape=(64, 256))
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0].view(ml_dtypes.float8_e4m3fn).astype(np.float32))
    want = static_quantize(x, scale).float()
    differ = got != want
    assert differ.double().mean() <= 1e-3
    assert bool(((got - want).abs() <= want.abs() / 8)[differ].all())


def test_matmul_on_fp8_is_not_onnx() -> None:
    node = h.make_node("MatMul", ["a", "b"], ["y"])
    graph = h.make_graph([node], "g", [], [h.make_tensor_value_info("y", FP8, [2, 2])],
                         initializer=[h.make_tensor("a", FP8, [2, 2], [1.0] * 4), h.make_tensor("b", FP8, [2, 2],
                                                                                                [1.0] * 4)])
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError), match="unsupported type"):
        onnx.checker.check_model(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)]), full_check=True)
