"""The rules of the TensorRT linter (``lint.py`` lists them); each takes a ``GraphIndex`` and returns findings."""

from __future__ import annotations

import numpy as np
import onnx

from recfx.onnx.lint import (
    GEMM_INPUTS,
    QDQ,
    TRT_FP8_TYPES,
    Finding,
    GraphIndex,
    Rule,
    attr,
)

#: TensorRT reads FP8 Q/DQ from opset 19 on.
TRT_MIN_QDQ_OPSET = 19
_TYPE_NAME = onnx.helper.tensor_dtype_to_string


def _finding(rule: str, node: onnx.NodeProto, message: str, severity: str = "warning") -> Finding:
    return Finding(rule, node.name or node.output[0], node.op_type, message, severity)


def check_opset(g: GraphIndex) -> list[Finding]:
    """FP8 Q/DQ need ai.onnx opset >= 19."""
    version = g.opsets.get("", g.opsets.get("ai.onnx", 0))
    first = next(g.nodes(*QDQ), None)
    if first is None or version >= TRT_MIN_QDQ_OPSET:
        return []
    return [_finding("opset", first, f"the model imports ai.onnx opset {version}; TensorRT's FP8 Q/DQ need opset >= "
                     f"{TRT_MIN_QDQ_OPSET} (recfx exports opset 21)", "error")]


def check_fp8_format(g: GraphIndex) -> list[Finding]:
    """Quantized tensors are FLOAT8E4M3FN (or INT8): TensorRT has no E5M2 or UINT8 Q/DQ."""
    out = []
    for node in g.nodes(*QDQ):
        if node.op_type == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            qtype = g.elem_type(zp) if zp else attr(node, "output_dtype", 0) or onnx.TensorProto.UINT8
        else:
            qtype = g.elem_type(node.input[0])
        if qtype is not None and qtype not in TRT_FP8_TYPES:
            why = " (no zero point: QuantizeLinear defaults to UINT8)" if node.op_type == "QuantizeLinear" and \
                len(node.input) < 3 else ""
            out.append(_finding("fp8-format", node, f"quantized type is {_TYPE_NAME(qtype)}{why}; TensorRT's explicit "
                                "quantization takes FLOAT8E4M3FN (or INT8) with a zero point of that type", "error"))
    return out


def check_zero_point(g: GraphIndex) -> list[Finding]:
    """Zero points are static and 0 (symmetric quantization)."""
    out = []
    for node in g.nodes(*QDQ):
        if len(node.input) < 3 or not node.input[2]:
            continue
        zp = g.constant(node.input[2])
        if zp is None:
            out.append(_finding("zero-point", node, "the zero point is computed at run time; TensorRT needs a "
                                "constant zero point of 0", "error"))
        elif np.any(zp.astype(np.float32) != 0):
            nonzero = zp.astype(np.float32).ravel()
            nonzero = nonzero[nonzero != 0]  # one value per finding: a report never dumps a tensor
            out.append(_finding("zero-point", node, f"zero point holds {nonzero.size} nonzero value(s) (first "
                                f"{nonzero[0]:g}), not 0; TensorRT only supports symmetric quantization (zero point "
                                "0)", "error"))
    return out


def _weight_of(g: GraphIndex, node: onnx.NodeProto) -> str | None:
    """The static weight a Q/DQ node quantizes: its own constant input, or (a DQ) the constant a Q -> DQ reads."""
    if g.is_constant(node.input[0]):
        return node.input[0]
    q = g.producer.get(node.input[0])
    if node.op_type == "DequantizeLinear" and q is not None and q.op_type == "QuantizeLinear" \
            and g.is_constant(q.input[0]):
        return q.input[0]
    return None


def _output_channel_axis(g: GraphIndex, node: onnx.NodeProto, weight: str) -> list[str]:
    """Problems with a per-axis weight scale: the axis must be the output channel of every GEMM it feeds."""
    axis = attr(node, "axis", 1)
    if weight in g.initializers:  # its dims, without loading the data
        rank: int | None = len(g.initializers[weight].dims)
    else:
        value = g.constant(weight)
        rank = value.ndim if value is not None else None
    if not rank:
        return []
    axis %= rank
    problems = []
    for consumer, idx, path in g.sinks(node.output[0]):
        if consumer.op_type not in GEMM_INPUTS:
            continue
        ax, known = axis, True
        for step in path:
            if step.op_type == "Transpose":
                perm = attr(step, "perm") or list(reversed(range(rank)))
                ax = list(perm).index(ax)
            elif step.op_type not in ("Identity", "Cast"):
                known = False
        if not known:
            problems.append(f"cannot follow axis {axis} through {', '.join(s.op_type for s in path)} to "
                            f"{consumer.op_type} {consumer.name!r}")
            continue
        if consumer.op_type == "MatMul":
            want = rank - 1 if idx == 1 else None
        elif consumer.op_type == "Gemm":
            want = (0 if attr(consumer, "transB", 0) else 1) if idx == 1 else None
        else:
            want = 0 if idx == 1 else None
        if want is None:
            problems.append(f"per-channel scale on input {idx} of {consumer.op_type} {consumer.name!r}, which is "
                            "not the weight operand")
        elif ax != want:
            problems.append(f"axis {axis} is not the output channel of {consumer.op_type} {consumer.name!r} "
                            f"(axis {want} of its weight input)")
    return problems


def check_scale(g: GraphIndex) -> list[Finding]:
    """Scales: static, finite, > 0; per-tensor on activations; per-channel weights on the output channel."""
    out = []
    for node in g.nodes(*QDQ):
        scale = g.constant(node.input[1])
        if scale is None:
            out.append(_finding("scale", node, "the scale is computed at run time; TensorRT needs scales as static "
                                "initializers (move a dynamic per-token factor out of the Q/DQ: Div before "
                                "QuantizeLinear with scale 1, Mul after the GEMM)", "error"))
            continue
        s = scale.astype(np.float64)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            out.append(_finding("scale", node, f"scale holds non-positive or non-finite values (min {s.min():g}); "
                                "TensorRT needs finite scales > 0", "error"))
        if attr(node, "block_size", 0):
            out.append(_finding("scale", node, f"blocked scales (block_size={attr(node, 'block_size')}); "
                                "TensorRT fuses per-tensor and per-channel FP8 Q/DQ only"))
            continue
        if s.size <= 1:
            continue
        weight = _weight_of(g, node)
        if weight is None:
            out.append(_finding("scale", node, f"per-channel scale ({s.size} values) on an activation; TensorRT "
                                "needs per-tensor activation scales"))
        elif node.op_type == "DequantizeLinear":  # a weight's Q feeds its DQ, which is checked against the GEMM
            out += [_finding("scale", node, p) for p in _output_channel_axis(g, node, weight)]
    return out


def check_qdq_pair(g: GraphIndex) -> list[Finding]:
    """Every QuantizeLinear is consumed by DequantizeLinear nodes with the same scale."""
    out = []
    for node in g.nodes("QuantizeLinear"):
        users = g.consumers.get(node.output[0], [])
        if not users or node.output[0] in g.outputs:
            out.append(_finding("qdq-pair", node, "QuantizeLinear output leaves the graph; TensorRT fuses Q only "
                                "with a following DequantizeLinear"))
        for user, _ in users:
            if user.op_type != "DequantizeLinear":
                out.append(_finding("qdq-pair", node, f"QuantizeLinear feeds {user.op_type} {user.name!r}, not a "
                                    "DequantizeLinear; TensorRT cannot fuse a lone Q"))
                continue
            qs, ds = g.constant(node.input[1]), g.constant(user.input[1])
            if qs is not None and ds is not None and (qs.shape != ds.shape or not np.array_equal(qs, ds)):
                out.append(_finding("qdq-pair", node, f"its DequantizeLinear {user.name!r} uses a different scale; "
                                    "TensorRT needs the same scale on both sides of a Q/DQ pair"))
    return out


def check_qdq_placement(g: GraphIndex) -> list[Finding]:
    """Every DequantizeLinear reaches a GEMM operand through data-movement ops only."""
    out = []
    for node in g.nodes("DequantizeLinear"):
        bad = [(c, i) for c, i, _ in g.sinks(node.output[0])
               if not (c.op_type in GEMM_INPUTS and i in GEMM_INPUTS[c.op_type])]
        if node.output[0] in g.outputs:
            out.append(_finding("qdq-placement", node, "DequantizeLinear output is a graph output; TensorRT would "
                                "run it as a standalone dequantize layer"))
        for c, i in bad:
            out.append(_finding("qdq-placement", node, f"feeds {c.op_type} {c.name!r} (input {i}), not a GEMM "
                                "operand; TensorRT fuses Q/DQ only into MatMul/Gemm/Conv inputs and would run this "
                                "one unfused"))
    return out


def _quantized(g: GraphIndex, name: str) -> bool:
    src, _ = g.source(name)
    node = g.producer.get(src)
    return node is not None and node.op_type == "DequantizeLinear"


def check_gemm_inputs(g: GraphIndex) -> list[Finding]:
    """A GEMM with one quantized operand has the other quantized too."""
    out = []
    for node in g.nodes(*GEMM_INPUTS):
        a, b = (node.input[i] for i in GEMM_INPUTS[node.op_type])
        qa, qb = _quantized(g, a), _quantized(g, b)
        if qa != qb:
            which = b if qa else a
            out.append(_finding("gemm-inputs", node, f"only one operand is quantized ({which!r} is not); TensorRT "
                                "runs an FP8 GEMM only when both inputs come from DequantizeLinear, so this one "
                                "stays in high precision"))
    return out


def check_weights(g: GraphIndex) -> list[Finding]:
    """Pre-quantized FP8 weights are read only through DequantizeLinear."""
    out = []
    for name, tensor in g.initializers.items():
        if tensor.data_type not in TRT_FP8_TYPES:
            continue
        for node, i in g.consumers.get(name, []):
            if not ((node.op_type == "DequantizeLinear" and i == 0) or (node.op_type in QDQ and i == 2)):
                out.append(_finding("weights", node, f"reads the FP8 initializer {name!r} directly; TensorRT takes "
                                    "pre-quantized weights only as FP8 initializer -> DequantizeLinear", "error"))
    return out


def check_epilogue(g: GraphIndex) -> list[Finding]:
    """No Q/DQ between a GEMM and its bias or residual add."""
    out = []
    for node in g.nodes("QuantizeLinear"):
        src, _ = g.source(node.input[0])
        producer = g.producer.get(src)
        if producer is None or producer.op_type not in GEMM_INPUTS:
            continue
        for dq, _ in g.consumers.get(node.output[0], []):
            adds = [c for c, _, _ in g.sinks(dq.output[0]) if c.op_type in ("Add", "Sub")]
            if dq.op_type == "DequantizeLinear" and adds:
                out.append(_finding("epilogue", node, f"Q/DQ between {producer.op_type} {producer.name!r} and "
                                    f"{adds[0].op_type} {adds[0].name!r}; TensorRT fuses the bias / residual add into "
                                    "the GEMM epilogue only without a Q/DQ in between"))
    return out


def check_plugins(g: GraphIndex) -> list[Finding]:
    """Custom-domain nodes follow TensorRT's plugin conventions."""
    out = []
    for node in g.graph.node:
        if node.domain in ("", "ai.onnx", "ai.onnx.ml"):
            continue
        if onnx.defs.has(node.op_type):
            out.append(_finding("plugin", node, f"plugin op_type {node.op_type!r} is also a standard ONNX op; "
                                "TensorRT would import it as the standard op, not the plugin", "error"))
        for key in ("plugin_version", "plugin_namespace"):
            a = next((x for x in node.attribute if x.name == key), None)
            if a is None:
                out.append(_finding("plugin", node, f"missing string attribute {key!r}; TensorRT would look the "
                                    f"plugin up with the default ({'1' if key == 'plugin_version' else 'empty'})"))
            elif a.type != onnx.AttributeProto.STRING:
                out.append(_finding("plugin", node, f"{key!r} must be a string attribute", "error"))
    return out


RULES: tuple[Rule, ...] = (check_opset, check_fp8_format, check_zero_point, check_scale, check_qdq_pair,
                           check_qdq_placement, check_gemm_inputs, check_weights, check_epilogue, check_plugins)


def counts(g: GraphIndex) -> dict[str, int]:
    gemms = list(g.nodes(*GEMM_INPUTS))
    return {
        "QuantizeLinear": sum(1 for _ in g.nodes("QuantizeLinear")),
        "DequantizeLinear": sum(1 for _ in g.nodes("DequantizeLinear")),
        "gemms": len(gemms),
        "quantized_gemms": sum(1 for n in gemms if all(_quantized(g, n.input[i]) for i in GEMM_INPUTS[n.op_type])),
        "plugins": sum(1 for n in g.graph.node if n.domain not in ("", "ai.onnx", "ai.onnx.ml")),
    }
