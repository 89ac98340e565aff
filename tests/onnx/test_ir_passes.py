"""Structural tests of the ONNX clean-ups: the optimizer keeps Q/DQ, FP8 weights get pre-transposed, dims renamed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto as T
from onnx import helper as h

from recfx.onnx.ir_passes import (
    dim_mapping,
    op_histogram,
    optimize,
    pretranspose_weights,
    rename_dims,
)


def _weight_linear(n: int = 3, k: int = 4, axis: int = 0) -> ir.Model:
    """x[b, K] @ Transpose(DQ(W_fp8[N, K], s[N], axis)): what the FP8 translation emits before clean-up."""
    w = (np.arange(n * k, dtype=np.float32) / 4).tolist()
    nodes = [h.make_node("DequantizeLinear", ["w", "s", "zp"], ["wd"], axis=axis),
             h.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
             h.make_node("MatMul", ["x", "wt"], ["y"])]
    inits = [h.make_tensor("w", T.FLOAT8E4M3FN, [n, k], w), h.make_tensor("s", T.FLOAT, [n], [0.5] * n),
             h.make_tensor("zp", T.FLOAT8E4M3FN, [n], [0.0] * n)]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["b", k])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["b", n])], initializer=inits)
    return ir.from_proto(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)]))


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_optimize_never_folds_dequantize_of_small_weights() -> None:
    model = _weight_linear()  # 12 elements: far below the folder's size limit
    optimize(model)
    assert op_histogram(model) == {"DequantizeLinear": 1, "MatMul": 1, "Transpose": 1}


def test_pretranspose_weights() -> None:
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    model = _weight_linear()
    want = _run(model, x)
    assert pretranspose_weights(model) == 1
    assert op_histogram(model) == {"DequantizeLinear": 1, "MatMul": 1}
    dq = next(n for n in model.graph if n.op_type == "DequantizeLinear")
    assert list(dq.inputs[0].shape) == [4, 3] and dq.attributes["axis"].as_int() == 1
    np.testing.assert_array_equal(_run(model, x), want)


def test_pretranspose_leaves_shared_weights() -> None:
    model = _weight_linear()
    graph = model.graph
    w = graph.initializers["w"]
    extra = ir.node("DequantizeLinear", [w, graph.initializers["s"], graph.initializers["zp"]],
                    attributes={"axis": 0})
    graph.append(extra)
    assert pretranspose_weights(model) == 0


def test_rename_dims() -> None:
    model = _weight_linear()
    x = model.graph.inputs[0]
    x.shape = ir.Shape([ir.SymbolicDim("s12"), 4])
    model.graph.outputs[0].shape = ir.Shape([ir.SymbolicDim("2*s12"), 3])
    mapping = dim_mapping(model.graph.inputs, [("batch", 4)])
    assert mapping == {"s12": "batch"}
    rename_dims(model, mapping)
    assert str(x.shape) == "[batch,4]" and str(model.graph.outputs[0].shape) == "[2*batch,3]"
