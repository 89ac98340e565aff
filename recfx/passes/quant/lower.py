"""``fp8_lower``: fold ``dequantize(quantize(x)) -> linear <- dequantize(w_q)`` into one FP8 GEMM op.

The fake-quant forms ``fp8_convert`` writes, and what each becomes:

=====================================================================  ===========================================
activation                        weight                               FP8 GEMM
=====================================================================  ===========================================
``dequantize_fp8(quantize_fp8(x, s), s)``   (static per-tensor)      ``fp8_linear(x, w_q, w_s, bias, s)``
``dequantize_fp8(*quantize_fp8_per_token(x))`` (dynamic per-token)   ``fp8_linear(x, w_q, w_s, bias)``
``dequantize_fp8_blocks(*quantize_fp8_groups(x, B), [B])``           ``fp8_linear_blocks(x, w_q, w_s, bias, B)``
=====================================================================  ===========================================

with the weight ``dequantize_fp8[_blocks](get_attr w_q, get_attr w_s, ...)``. A plain ``Rewrite`` cannot express
this: the activation Q/DQ pair is shared by several linears (q/k/v), which fx's subgraph matcher refuses.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.state import PLAN
from recfx.passes.utils import fill_meta, finish, is_impure, tensor_meta

log = logging.getLogger(__name__)
ops = torch.ops.recfx
aten = torch.ops.aten
FP8_GEMMS = (ops.fp8_linear.default, ops.fp8_linear_blocks.default)
DEQUANTIZE = (ops.dequantize_fp8.default, ops.dequantize_fp8_blocks.default)
QUANTIZE = (ops.quantize_fp8.default, ops.quantize_fp8_per_token.default, ops.quantize_fp8_groups.default)


@dataclasses.dataclass(frozen=True)
class Fp8LinearMatch:
    """A fake-quant linear and what its FP8 GEMM takes."""

    linear: Node
    x: Node
    w_q: Node
    w_scale: Node
    bias: Any
    x_scale: Node | None  # static per-tensor scale, None for dynamic modes
    block_size: int | None  # block-scaled GEMM when set


def _split(node: Any) -> tuple[Node, int] | None:
    """``getitem(t, i)`` -> (t, i)."""
    if isinstance(node, Node) and node.op == "call_function" and node.target is operator.getitem:
        t, i = node.args
        return (t, int(i)) if isinstance(t, Node) and isinstance(i, int) else None
    return None


def _activation(dq: Any) -> tuple[Node, Node | None, int | None, str] | None:
    """(x, static scale, group size, mode) of a dequantized activation, or None."""
    if not (isinstance(dq, Node) and dq.target in DEQUANTIZE):
        return None
    q, s = dq.args[0], dq.args[1]
    if isinstance(q, Node) and q.target is ops.quantize_fp8.default and dq.target is ops.dequantize_fp8.default:
        x = q.args[0]
        static = isinstance(x, Node) and isinstance(s, Node) and q.args[1] is s and s.op == "get_attr"
        return (x, s, None, "static") if static else None  # type: ignore[return-value]
    pq, ps = _split(q), _split(s)
    if pq is None or ps is None or pq[0] is not ps[0] or (pq[1], ps[1]) != (0, 1):
        return None
    t = pq[0]
    x = t.args[0]
    if not isinstance(x, Node):
        return None
    if t.target is ops.quantize_fp8_per_token.default and dq.target is ops.dequantize_fp8.default:
        return x, None, None, "per_token"
    if t.target is ops.quantize_fp8_groups.default and dq.target is ops.dequantize_fp8_blocks.default:
        group = t.args[1]
        blocks = dq.args[2]
        ok = isinstance(group, int) and isinstance(blocks, (list, tuple)) and list(blocks) == [group]
        return (x, None, group, "groups") if ok else None  # type: ignore[return-value]
    return None


def match_fp8_linear(linear: Node) -> Fp8LinearMatch | None:
    """The FP8 GEMM a fake-quant ``aten.linear`` folds into, or None when it is not one."""
    if linear.target is not aten.linear.default:
        return None
    act = _activation(linear.args[0])
    w_dq = linear.args[1]
    if act is None or not (isinstance(w_dq, Node) and w_dq.target in DEQUANTIZE):
        return None
    x, x_scale, group, _ = act
    w_q, w_s = w_dq.args[0], w_dq.args[1]
    if not (isinstance(w_q, Node) and w_q.op == "get_attr" and isinstance(w_s, Node) and w_s.op == "get_attr"):
        return None
    out, x_val = tensor_meta(linear), tensor_meta(x)
    if out is None or x_val is None or out.dtype != x_val.dtype:
        return None
    blocks = w_dq.target is ops.dequantize_fp8_blocks.default
    w_blocks = w_dq.args[2] if blocks else None
    if blocks != (group is not None) or (blocks and list(w_blocks) != [group, group]):  # type: ignore[arg-type]
        return None
    bias = linear.args[2] if len(linear.args) > 2 else linear.kwargs.get("bias")
    return Fp8LinearMatch(linear, x, w_q, w_s, bias, x_scale, group)


def _unlowered(gm: GraphModule) -> list[str]:
    return [f"{n.name}: linear still reads a dequantized weight" for n in gm.graph.nodes
            if n.target is aten.linear.default and isinstance(n.args[1], Node) and n.args[1].target in DEQUANTIZE]


@register_pass("fp8_lower", stage="quantize", postcondition=_unlowered)
class Fp8Lower:
    """No linear reads a dequantized weight: every fake-quant linear is one recfx::fp8_linear[_blocks] GEMM."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        graph = gm.graph
        count = 0
        for node in list(graph.nodes):
            m = match_fp8_linear(node)
            if m is None:
                continue
            with graph.inserting_before(node):
                if m.block_size is not None:
                    new = graph.call_function(ops.fp8_linear_blocks.default,
                                              (m.x, m.w_q, m.w_scale, m.bias, m.block_size))
                else:
                    new = graph.call_function(ops.fp8_linear.default, (m.x, m.w_q, m.w_scale, m.bias, m.x_scale))
            new.meta = {k: v for k, v in node.meta.items() if k not in ("val", "tensor_meta")}
            fill_meta(gm, [new])  # now: a linear reading this GEMM's output is matched by its dtype below
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            count += 1
        graph.eliminate_dead_code(is_impure_node=is_impure)
        fill_meta(gm)
        finish(gm)
        log.info("fp8_lower: %d FP8 GEMMs", count)
        return PassResult(gm, modified=count > 0, changed_nodes=count, detail=f"{count} FP8 GEMMs")


def fp8_gemms(gm: GraphModule) -> list[Node]:
    """The FP8 GEMM nodes of a lowered graph."""
    return [n for n in gm.graph.nodes if n.target in FP8_GEMMS]


__all__ = ["FP8_GEMMS", "PLAN", "Fp8LinearMatch", "fp8_gemms", "match_fp8_linear"]
