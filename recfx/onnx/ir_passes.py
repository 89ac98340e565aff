"""Clean-ups on the exported ``onnx_ir`` model: optimisation that keeps Q/DQ, readable dim and output names.

Example:
    >>> import onnx_ir as ir
    >>> from recfx.onnx.ir_passes import rename_dims
    >>> x = ir.Value(name="x", shape=ir.Shape([ir.SymbolicDim("s12"), 4]), type=ir.TensorType(ir.DataType.FLOAT))
    >>> model = ir.Model(ir.Graph([x], [x], nodes=[]), ir_version=10)
    >>> rename_dims(model, {"s12": "batch"}); str(x.shape)
    '[batch,4]'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

#: Ops TensorRT's explicit quantization reads: the optimizer must never fold them into float constants.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _rules() -> list[Any]:
    """onnxscript's clean-up rewrites (no-ops, cast/reshape/transpose chains, slices), minus its slow Slice->Split."""
    from onnxscript.rewriter.rules import common as r

    return [r.no_op_cast_rule, r.no_op_expand_rule, r.no_op_transpose_rule, r.cast_cast_rule, r.reshape_reshape_rule,
            r.transpose_transpose_rule, r.unsqueeze_unsqueeze_rule, r.squeeze_reshape_1d_rule, r.add_0_rule,
            r.sub_0_rule, r.mul_by_1_rule, r.div_by_1_rule, r.collapse_slice_rule, r.collapse_slice2_rule,
            r.materialize_reshape_shape_rule, r.flatten_to_reshape_rule, *r.expand_before_binary_op_rules]


def optimize(model: ir.Model, iterations: int = 2) -> None:
    """Constant folding, clean-up rewrites, CSE and dead-code removal, constants lifted to initializers; in place.

    ``QuantizeLinear``/``DequantizeLinear`` are never folded, so FP8 weights stay FP8 initializers followed by
    ``DequantizeLinear``; reshapes of scales are folded into initializers. (onnxscript's full ``optimize_ir`` is
    this plus a Slice->Split rewrite whose matcher takes most of the time on 1,000-node graphs.)
    """
    import onnxscript.optimizer
    from onnx_ir.passes import common
    from onnxscript.rewriter import RewritePass

    def should_fold(node: ir.Node) -> bool | None:
        return False if node.domain == "" and node.op_type in QDQ_OPS else None

    common.InlinePass()(model)
    rewrite = RewritePass(_rules())
    for _ in range(iterations):
        folded = onnxscript.optimizer.fold_constants(model, should_fold=should_fold).modified
        rewritten = rewrite(model).modified
        common.RemoveUnusedNodesPass()(model)
        if not (folded or rewritten):
            break
    for cleanup in (common.RemoveUnusedNodesPass(), common.LiftConstantsToInitializersPass(lift_all_constants=True,
                    size_limit=0), common.DeduplicateInitializersPass(), common.CommonSubexpressionEliminationPass(),
                    common.RemoveUnusedNodesPass(), common.RemoveUnusedOpsetsPass()):
        cleanup(model)


def _transposed(value: ir.Value, name: str) -> ir.Value:
    const = value.const_value
    assert const is not None
    array = np.ascontiguousarray(const.numpy().T)
    tensor = ir.tensor(array, dtype=const.dtype, name=name)
    return ir.Value(name=name, shape=ir.Shape(list(array.shape)), type=ir.TensorType(tensor.dtype),
                    const_value=tensor)


def pretranspose_weights(model: ir.Model) -> int:
    """``W[N, K] -> DequantizeLinear(axis) -> Transpose`` becomes ``W.T[K, N] -> DequantizeLinear(1 - axis)``.

    The GEMM then reads its weight straight from the DequantizeLinear (what TensorRT expects of a pre-quantized
    weight), with the per-channel axis on the output channel of the ``MatMul``'s B input. Applies to 2-D weight
    initializers used by nothing else; scales and zero points of blocked Q/DQ are transposed with them.

    Returns:
        How many weights were transposed.
    """
    graph = model.graph
    done = 0
    for node in list(graph):
        if node.op_type != "DequantizeLinear" or node.domain != "" or len(node.outputs[0].uses()) != 1:
            continue
        weight = node.inputs[0]
        user = next(iter(node.outputs[0].uses())).node
        if weight is None:
            continue
        perm = user.attributes.get("perm")
        if (user.op_type != "Transpose" or perm is None or list(perm.as_ints()) != [1, 0]
                or not weight.is_initializer() or weight.const_value is None or len(weight.const_value.shape) != 2
                or len(weight.uses()) != 1 or user.outputs[0].is_graph_output()):
            continue
        blocked = node.attributes.get("block_size") is not None and node.attributes["block_size"].as_int() > 0
        others = [v for v in node.inputs[1:] if v is not None]
        if blocked and any(not v.is_initializer() or v.const_value is None or len(v.uses()) != 1 for v in others):
            continue
        axis = node.attributes["axis"].as_int() if "axis" in node.attributes else 1
        for i, value in enumerate(node.inputs):
            if value is not None and (i == 0 or blocked):
                new = _transposed(value, f"{value.name}_t")
                graph.register_initializer(new)
                node.replace_input_with(i, new)
                graph.initializers.pop(str(value.name), None)
        node.attributes["axis"] = ir.AttrInt64("axis", 1 - axis % 2)
        node.outputs[0].shape = user.outputs[0].shape
        user.outputs[0].replace_all_uses_with(node.outputs[0])
        graph.remove(user, safe=True)
        done += 1
    return done


def rename_dims(model: ir.Model, mapping: Mapping[str, str]) -> None:
    """Rename symbolic dims (``s12`` -> ``batch``) everywhere in the main graph, expressions included."""
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")\b")

    def fix(value: ir.Value) -> None:
        if value.shape is None:
            return
        dims = [ir.SymbolicDim(pattern.sub(lambda m: mapping[m.group(1)], d.value))
                if isinstance(d, ir.SymbolicDim) and d.value is not None else d for d in value.shape]
        value.shape = ir.Shape(dims)

    graph = model.graph
    for value in list(graph.inputs) + list(graph.outputs):
        fix(value)
    for node in graph:
        for value in node.outputs:
            fix(value)


def dim_mapping(graph_inputs: Sequence[ir.Value], specs: Sequence[tuple[int | str, ...]]) -> dict[str, str]:
    """Map the exporter's dim symbols to recfx's names, from the graph inputs and the compiled input specs."""
    mapping: dict[str, str] = {}
    for value, shape in zip(graph_inputs, specs):
        if value.shape is None:
            continue
        for dim, want in zip(value.shape, shape):
            if isinstance(dim, ir.SymbolicDim) and dim.value is not None and isinstance(want, str) \
                    and want.isidentifier():
                mapping.setdefault(dim.value, want)
    return mapping


def separate_outputs(graph: ir.Graph) -> int:
    """Give every graph output its own value: an output that is a graph input, an initializer or an earlier output
    (``return x.relu(), x``; ``return y, y``) becomes an ``Identity`` of it, so that naming the outputs never renames
    an input and no two outputs share a name. Returns how many ``Identity`` nodes were added."""
    seen: set[int] = {id(v) for v in graph.inputs} | {id(v) for v in graph.initializers.values()}
    added = 0
    for i, value in enumerate(list(graph.outputs)):
        if id(value) in seen:
            node = ir.node("Identity", [value], name=f"output_copy_{i}")
            copy = node.outputs[0]
            copy.shape, copy.type = value.shape, value.type
            graph.append(node)
            graph.outputs[i] = copy
            added += 1
            value = copy
        seen.add(id(value))
    return added


def rename_values(values: Sequence[ir.Value], names: Sequence[str]) -> None:
    """Give graph inputs/outputs the names of the compiled module's specs (``features_0``, ``output_0``)."""
    taken = {v.name for v in values}
    for value, name in zip(values, names):
        if value.name != name and name not in taken - {value.name}:
            taken.discard(value.name)
            value.name = name
            taken.add(name)


def op_histogram(model: ir.Model | onnx.ModelProto) -> dict[str, int]:
    """``{op_type: count}`` of the main graph; ops outside the default domain are ``domain::op_type``."""
    nodes = model.graph.node if isinstance(model, onnx.ModelProto) else model.graph
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in nodes)
    return dict(sorted(counts.items()))
