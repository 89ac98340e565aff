"""``inline_autocast``: the bodies of ``torch.autocast`` / ``torch.set_grad_enabled`` regions are in the main graph.

torch.export wraps such a region in a higher-order op (``wrap_with_autocast``, ``wrap_with_set_grad_enabled``)
whose body is a submodule, so passes that look at the main graph (the GEMM canonicalisation, the FP8 policy) do not
see the linears inside. Grad mode does not change a value at inference, so those bodies are inlined as they are.
An autocast body is inlined with autocast's casts written out: every floating input of a GEMM (``linear``, ``mm``,
``addmm``, ``matmul``, ``bmm``, ``baddbmm``, ``einsum``: autocast's lower-precision ops) other than float64 is cast
to the region's dtype, which is what autocast does at run time. A body holding any op outside the GEMMs and the ops
autocast leaves alone (views, elementwise arithmetic and activations, dtype casts) is left wrapped, since its other
ops may run in float32 or promote under autocast; so is a nested region.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import fetch_attr, fill_meta, finish, is_impure, tensor_meta

log = logging.getLogger(__name__)
aten = torch.ops.aten
_AUTOCAST = torch.ops.higher_order.wrap_with_autocast
_GRAD = torch.ops.higher_order.wrap_with_set_grad_enabled
#: autocast's lower-precision ops among the GEMMs (their floating inputs are cast to the region's dtype)
_GEMMS = frozenset({aten.linear.default, aten.mm.default, aten.addmm.default, aten.matmul.default, aten.bmm.default,
                    aten.baddbmm.default, aten.einsum.default})
#: ops that autocast runs in their inputs' dtypes (no cast, no fp32 policy): inlined unchanged
_NEUTRAL = frozenset({
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unsqueeze.default,
    aten.squeeze.dim, aten.flatten.using_ints, aten.permute.default, aten.transpose.int, aten.t.default,
    aten.expand.default, aten.contiguous.default, aten.clone.default, aten.slice.Tensor, aten.select.int,
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.add.Scalar, aten.mul.Scalar,
    aten.neg.default, aten.relu.default, aten.gelu.default, aten.silu.default, aten.sigmoid.default,
    aten.tanh.default, aten.dropout.default, aten.to.dtype, aten._to_copy.default, aten.sym_size.int,
    aten._assert_tensor_metadata.default, operator.getitem,
})
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _region(node: Node) -> tuple[torch.fx.GraphModule, tuple[Any, ...], torch.dtype | None] | None:
    """(body, operands, autocast dtype or None) of an inlinable region node, else None."""
    if node.target is _GRAD:
        body_arg, operands, dtype = node.args[1], node.args[2:], None
    elif node.target is _AUTOCAST:
        _device, dtype, enabled, _cache, body_arg = node.args[:5]
        operands = node.args[5:]
        dtype = dtype if enabled else None
        if enabled and dtype not in _FLOATS:
            return None
    else:
        return None
    if not isinstance(body_arg, Node) or body_arg.op != "get_attr":
        return None
    body = fetch_attr(node.graph.owning_module, str(body_arg.target))  # type: ignore[arg-type]
    if not isinstance(body, GraphModule):
        return None
    for n in body.graph.nodes:
        if n.op == "get_attr" or n.op == "call_module":
            return None  # nested regions, constants of its own
        if n.op == "call_function" and n.target not in _GEMMS and n.target not in _NEUTRAL:
            log.debug("inline_autocast: %s kept wrapped (%s inside)", node.name, n.target)
            return None
    return body, tuple(operands), dtype if isinstance(dtype, torch.dtype) else None


def _inline(gm: GraphModule, node: Node, body: GraphModule, operands: tuple[Any, ...],
            dtype: torch.dtype | None) -> None:
    graph = gm.graph
    placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
    env: dict[Node, Any] = dict(zip(placeholders, operands))
    dtypes: dict[Node, torch.dtype] = {}  # the dtype of every copied value, as traced under the region
    for p, outer in zip(placeholders, operands):
        val = tensor_meta(outer) if isinstance(outer, Node) else None
        if val is not None:
            dtypes[outer] = val.dtype
    provenance = {k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace")}
    results: Any = None
    with graph.inserting_before(node):
        for n in body.graph.nodes:
            if n.op == "placeholder":
                continue
            if n.op == "output":
                results = torch.fx.node.map_arg(n.args[0], lambda a: env[a])
                break
            if dtype is not None and n.target in _GEMMS:  # autocast's casts, in front of the GEMM
                casts = {a: _cast(graph, env[a], dtype, dtypes) for a in n.all_input_nodes}
                copied = graph.node_copy(n, lambda a: casts[a])
            else:
                copied = graph.node_copy(n, lambda a: env[a])
            copied.meta = {**provenance, **{k: v for k, v in n.meta.items() if k != "val"}}
            val = tensor_meta(n)
            if val is not None:
                dtypes[copied] = val.dtype
            env[n] = copied
    outputs = results if isinstance(results, (list, tuple)) else (results,)
    for user in list(node.users):
        if user.target is operator.getitem and isinstance(user.args[1], int):
            user.replace_all_uses_with(outputs[user.args[1]])
            graph.erase_node(user)
    assert not node.users, f"{node.name}: a region output used other than by index"
    graph.erase_node(node)


def _cast(graph: torch.fx.Graph, arg: Any, dtype: torch.dtype, dtypes: dict[Node, torch.dtype]) -> Any:
    """``arg`` cast to ``dtype`` where autocast would cast it (a float16/bfloat16/float32 tensor of another dtype)."""
    if not isinstance(arg, Node) or dtypes.get(arg) not in _FLOATS or dtypes[arg] == dtype:
        return arg
    cast = graph.call_function(aten._to_copy.default, (arg,), {"dtype": dtype})
    dtypes[cast] = dtype
    return cast


@register_pass("inline_autocast", stage="canonicalize")
def inline_autocast(gm: GraphModule) -> PassResult:
    """No autocast / grad-mode region whose body autocast changes only at its GEMMs is left wrapped."""
    count = kept = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (_AUTOCAST, _GRAD):
            continue
        region = _region(node)
        if region is None:
            kept += 1
            continue
        _inline(gm, node, *region)
        count += 1
    if count:
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        gm.delete_all_unused_submodules()
        fill_meta(gm)
        finish(gm)
    detail = f"{count} region(s) inlined" + (f", {kept} kept (ops autocast may run in float32)" if kept else "")
    log.info("inline_autocast: %s", detail)
    return PassResult(gm, modified=count > 0, changed_nodes=count, detail=detail)
