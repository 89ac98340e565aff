"""The TensorRT-rules linter: a clean Q/DQ GEMM passes, and each rule catches its violation in a hand-made graph
(and only that rule fires)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from recfx.onnx import lint_model

FP8 = T.FLOAT8E4M3FN


def _fp8(name: str, shape: list[int], values: list[float] | None = None) -> onnx.TensorProto:
    n = int(np.prod(shape)) if shape else 1
    return h.make_tensor(name, FP8, shape, values if values is not None else [0.0] * n)


def _f32(name: str, shape: list[int], values: list[float]) -> onnx.TensorProto:
    return h.make_tensor(name, T.FLOAT, shape, values)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], *, opset: int = 21,
           inputs: list[onnx.ValueInfoProto] | None = None, domains: dict[str, int] | None = None) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", inputs or [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                         [h.make_tensor_value_info(nodes[-1].output[0], T.FLOAT, [2, 3])], initializer=inits)
    imports = [h.make_opsetid("", opset)] + [h.make_opsetid(d, v) for d, v in (domains or {}).items()]
    return h.make_model(graph, opset_imports=imports)


def _linear(*, x_scale: float = 0.1, x_zp: onnx.TensorProto | None = None, w_scale: list[float] | None = None,
            w_axis: int = 1, epilogue: str = "Add", opset: int = 21, extra: list[onnx.NodeProto] = ()
            ) -> onnx.ModelProto:
    """x -> Q -> DQ -> MatMul(., DQ(W_fp8 [4, 3], axis=1)) -> Add(bias): what recfx exports for an FP8 linear."""
    nodes = [
        h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"], name="q_x"),
        h.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"], name="dq_x"),
        h.make_node("DequantizeLinear", ["w", "sw", "zpw"], ["wd"], name="dq_w", axis=w_axis),
        h.make_node("MatMul", ["xd", "wd"], ["mm"], name="gemm"),
        *extra,
        h.make_node(epilogue, ["mm", "b"], ["y"], name="bias"),
    ]
    sw = w_scale or [0.5, 0.25, 0.125]
    inits = [_f32("sx", [], [x_scale]), x_zp or _fp8("zp", []), _fp8("w", [4, 3], [1.0] * 12),
             _f32("sw", [len(sw)], sw), _fp8("zpw", [len(sw)]), _f32("b", [3], [0.0, 1.0, 2.0])]
    return _model(nodes, inits, opset=opset)


def test_clean_fp8_linear_passes() -> None:
    model = _linear()
    onnx.checker.check_model(model, full_check=True)
    report = lint_model(model)
    assert report.ok, report.render()
    assert report.counts == {"QuantizeLinear": 1, "DequantizeLinear": 2, "gemms": 1, "quantized_gemms": 1,
                             "plugins": 0}
    assert report.headline().startswith("TensorRT rules: OK")


def test_fp32_graph_passes() -> None:
    model = _model([h.make_node("MatMul", ["x", "w"], ["y"])], [_f32("w", [4, 2], [1.0] * 8)])
    assert lint_model(model).ok


def _rules(model: onnx.ModelProto) -> dict[str, int]:
    return lint_model(model).by_rule()


def test_opset_below_19() -> None:
    assert _rules(_linear(opset=17)) == {"opset": 1}


def test_fp8_format_e5m2_and_uint8() -> None:
    e5m2 = h.make_tensor("zp", T.FLOAT8E5M2, [], [0.0])
    assert _rules(_linear(x_zp=e5m2)) == {"fp8-format": 2}  # the Q and its DQ
    no_zp = _linear()
    no_zp.graph.node[0].input.pop()  # QuantizeLinear without a zero point emits UINT8
    assert _rules(no_zp)["fp8-format"] == 2


def test_zero_point_not_zero() -> None:
    assert _rules(_linear(x_zp=_fp8("zp", [], [2.0]))) == {"zero-point": 2}


def test_findings_name_one_value_not_the_tensor() -> None:
    """A per-channel zero point of 3 nonzero values: the finding counts them and shows the first only."""
    model = _linear()
    zpw = next(t for t in model.graph.initializer if t.name == "zpw")
    zpw.CopyFrom(_fp8("zpw", [3], [2.0, 3.0, 4.0]))
    (finding,) = lint_model(model).findings
    assert finding.rule == "zero-point" and "3 nonzero value(s) (first 2)" in finding.message
    assert "3.0" not in finding.message and "4" not in finding.message


def test_scale_non_positive() -> None:
    assert _rules(_linear(x_scale=-0.5)) == {"scale": 2}
    assert _rules(_linear(w_scale=[0.5, 0.0, 0.1])) == {"scale": 1}


def test_scale_computed_at_run_time() -> None:
    model = _linear()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "sx"))
    model.graph.input.append(h.make_tensor_value_info("sx", T.FLOAT, []))
    assert _rules(model) == {"scale": 2}


def test_scale_from_constant_node_is_static() -> None:
    model = _linear()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "sx"))
    model.graph.node.insert(0, h.make_node("Constant", [], ["sx"], value=_f32("c", [], [0.1])))
    assert lint_model(model).ok


def test_per_channel_activation_scale() -> None:
    model = _linear()
    sx = next(t for t in model.graph.initializer if t.name == "sx")
    sx.CopyFrom(_f32("sx", [4], [0.1] * 4))
    zp = next(t for t in model.graph.initializer if t.name == "zp")
    zp.CopyFrom(_fp8("zp", [4]))
    for node in model.graph.node[:2]:
        node.attribute.append(h.make_attribute("axis", 1))
    assert _rules(model) == {"scale": 2}


def test_weight_axis_not_output_channel() -> None:
    # W is [K=4, N=3] as the MatMul's B input: the output channel is axis 1; axis 0 scales the reduction dim
    model = _linear(w_scale=[0.5, 0.25, 0.125, 0.1], w_axis=0)
    findings = lint_model(model).findings
    assert [f.rule for f in findings] == ["scale"] and "output channel" in findings[0].message


def test_weight_axis_through_transpose() -> None:
    # W stored [N=3, K=4] with axis 0, then Transpose: still the output channel -> clean
    nodes = [h.make_node("DequantizeLinear", ["w", "sw", "zpw"], ["wd"], axis=0),
             h.make_node("Transpose", ["wd"], ["wt"], perm=[1, 0]),
             h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"]),
             h.make_node("MatMul", ["xd", "wt"], ["y"])]
    inits = [_fp8("w", [3, 4], [1.0] * 12), _f32("sw", [3], [0.5, 0.25, 0.125]), _fp8("zpw", [3]),
             _f32("sx", [], [0.1]), _fp8("zp", [])]
    assert lint_model(_model(nodes, inits)).ok


@pytest.mark.parametrize(("axis", "want"), [(1, {}), (0, {"scale": 1})])
def test_float_weight_q_dq_per_channel(axis: int, want: dict[str, int]) -> None:
    # float W [K=4, N=3] -> Q -> DQ per-channel: a TensorRT weight pattern; axis 1 is the MatMul's output channel
    n = 3 if axis == 1 else 4
    nodes = [h.make_node("QuantizeLinear", ["w", "sw", "zpw"], ["wq"], axis=axis),
             h.make_node("DequantizeLinear", ["wq", "sw", "zpw"], ["wd"], axis=axis),
             h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"]),
             h.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [_f32("w", [4, 3], [1.0] * 12), _f32("sw", [n], [0.5] * n), _fp8("zpw", [n]), _f32("sx", [], [0.1]),
             _fp8("zp", [])]
    findings = lint_model(_model(nodes, inits)).findings
    assert _rules(_model(nodes, inits)) == want
    assert all("output channel" in f.message for f in findings)


def test_blocked_scales() -> None:
    nodes = [h.make_node("DequantizeLinear", ["w", "sw", "zpw"], ["wd"], axis=0, block_size=2),
             h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"]),
             h.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [_fp8("w", [4, 3], [1.0] * 12), _f32("sw", [2, 3], [0.5] * 6), _fp8("zpw", [2, 3]),
             _f32("sx", [], [0.1]), _fp8("zp", [])]
    assert _rules(_model(nodes, inits)) == {"scale": 1}


def test_lone_quantize_and_scale_mismatch() -> None:
    lone = _model([h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["q"]), h.make_node("Cast", ["q"], ["y"], to=1)],
                  [_f32("sx", [], [0.1]), _fp8("zp", [])])
    assert _rules(lone) == {"qdq-pair": 1}
    mismatch = _linear()
    mismatch.graph.node[1].input[1] = "sx2"
    mismatch.graph.initializer.append(_f32("sx2", [], [0.2]))
    assert _rules(mismatch) == {"qdq-pair": 1}


def test_dequantize_not_on_a_gemm_input() -> None:
    nodes = [h.make_node("QuantizeLinear", ["x", "sx", "zp"], ["xq"]),
             h.make_node("DequantizeLinear", ["xq", "sx", "zp"], ["xd"]),
             h.make_node("Add", ["xd", "x"], ["y"])]
    assert _rules(_model(nodes, [_f32("sx", [], [0.1]), _fp8("zp", [])])) == {"qdq-placement": 1}


def test_gemm_with_one_quantized_input() -> None:
    nodes = [h.make_node("DequantizeLinear", ["w", "sw", "zpw"], ["wd"], axis=1),
             h.make_node("MatMul", ["x", "wd"], ["y"])]
    inits = [_fp8("w", [4, 3], [1.0] * 12), _f32("sw", [3], [0.5, 0.25, 0.125]), _fp8("zpw", [3])]
    assert _rules(_model(nodes, inits)) == {"gemm-inputs": 1}


def test_fp8_weight_read_without_dequantize() -> None:
    nodes = [h.make_node("Cast", ["w"], ["wf"], to=T.FLOAT), h.make_node("MatMul", ["x", "wf"], ["y"])]
    assert _rules(_model(nodes, [_fp8("w", [4, 3], [1.0] * 12)])) == {"weights": 1}


def test_qdq_between_gemm_and_bias() -> None:
    extra = [h.make_node("QuantizeLinear", ["mm", "so", "zp"], ["mq"], name="q_out"),
             h.make_node("DequantizeLinear", ["mq", "so", "zp"], ["md"], name="dq_out")]
    model = _linear(extra=extra)
    model.graph.node[-1].input[0] = "md"
    model.graph.initializer.append(_f32("so", [], [0.2]))
    rules = _rules(model)
    assert rules["epilogue"] == 1 and set(rules) == {"epilogue", "qdq-placement"}  # its DQ feeds the Add too


@pytest.mark.parametrize(("op_type", "attrs", "want"), [
    ("MatMul", {"plugin_version": "1", "plugin_namespace": "recfx"}, "standard ONNX op"),
    ("KsaAttention", {"plugin_namespace": "recfx"}, "missing string attribute 'plugin_version'"),
    ("KsaAttention", {"plugin_version": 1, "plugin_namespace": "recfx"}, "must be a string attribute"),
])
def test_plugin_conventions(op_type: str, attrs: dict[str, object], want: str) -> None:
    node = h.make_node(op_type, ["x"], ["y"], domain="trt.plugins", **attrs)
    report = lint_model(_model([node], [], domains={"trt.plugins": 1}))
    assert [f.rule for f in report.findings] == ["plugin"] and want in report.findings[0].message


def test_well_formed_plugin_passes() -> None:
    node = h.make_node("KsaAttention", ["x"], ["y"], domain="trt.plugins", plugin_version="1",
                       plugin_namespace="recfx", chunk_size=4)
    assert lint_model(_model([node], [], domains={"trt.plugins": 1})).ok


def test_report_render_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.onnx"
    onnx.save(_linear(x_scale=-1.0), str(path))
    report = lint_model(path)
    assert not report.ok and "[scale] error" in report.render()
    data = report.to_dict()
    assert data["ok"] is False and data["findings"][0]["rule"] == "scale" and data["findings"][0]["node"] == "q_x"
    with pytest.raises(FileNotFoundError):
        lint_model(tmp_path / "missing.onnx")
