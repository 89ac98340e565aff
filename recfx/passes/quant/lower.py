"""``fp8_lower``: fold ``dequantize(quantize(x)) -> linear <- dequantize(w_q)`` into one FP8 GEMM op.

The fake-quant forms ``fp8_convert`` writes, and what each becomes:

=====================================================================  ===========================================
activation                        weight                               FP8 GEMM
=====================================================================  ===========================================
``dequantize_fp8(quantize_fp8(x, s), s)``   (static per-tensor)      ``fp8_linear(x, w_q, w_s, bias, s)``
``dequantize_fp8(*quantize_fp8_per_token(x))`` (dynamic per-token)   ``fp8_linear(x, w_q, w_s, bias)``
``dequantize_fp8_blocks(*quantize_fp8_groups(x, B), [B])``           ``fp8_linear_blocks(x, w_q, w_s, bias, B)``
=====================================================================  ===========================================

with the weight ``dequantize_fp8[_blocks](get_attr w_q, get_attr w_s, ...)``. The table shows the built-in
granularities; the code does not spell it out: each pattern is recorded from the granularity descriptors
(``recfx.ops.fp8_terms``) by running the same ``fake_quant`` / ``dequantize`` that ``fp8_convert`` emits with a
recording ``call``, and the GEMM is the one the pair names. So a registered granularity lowers without a change
here. A plain ``Rewrite`` cannot express this: the activation Q/DQ pair is shared by several linears (q/k/v), which
fx's subgraph matcher refuses.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.ops.fp8_terms import ACTIVATION_MODES, WEIGHT_GRANULARITIES, Fp8Gemm, fp8_gemm
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.state import PLAN
from recfx.passes.utils import fill_meta, finish, is_impure, tensor_meta

log = logging.getLogger(__name__)
ops = torch.ops.recfx
aten = torch.ops.aten
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
    x_scale: Node | None  # calibrated static scale, None for dynamic modes
    block_size: int | None  # the block / group size, when the granularities use one
    gemm: Fp8Gemm


class _Hole:
    """A place in a pattern that binds to whatever the graph has there (the same value at every use)."""


@dataclasses.dataclass(eq=False)
class _Call:
    """An op call of a pattern."""

    target: Any
    args: tuple[Any, ...]


def _record(op: Any, *args: Any, **kwargs: Any) -> _Call:
    """A ``Call`` that records the pattern a granularity emits instead of running it."""
    assert not kwargs, f"granularities emit positional arguments only, got {kwargs} for {op}"
    return _Call(op, args)


def _unify(pattern: Any, value: Any, env: dict[int, Any]) -> bool:
    """Whether ``value`` (graph nodes and constants) has the shape of ``pattern``; binds holes and calls in ``env``."""
    if isinstance(pattern, (_Hole, _Call)):
        if id(pattern) in env:  # seen before: must be the very same node / an equal constant
            bound = env[id(pattern)]
            return bound is value if isinstance(value, Node) or isinstance(bound, Node) else bound == value
        if isinstance(pattern, _Call) and not (
                isinstance(value, Node) and value.op == "call_function" and value.target is pattern.target
                and not value.kwargs and len(value.args) == len(pattern.args)):
            return False
        env[id(pattern)] = value
        return isinstance(pattern, _Hole) or all(_unify(p, v, env) for p, v in zip(pattern.args, value.args))
    if isinstance(pattern, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(pattern)
                and all(_unify(p, v, env) for p, v in zip(pattern, value)))
    return not isinstance(value, Node) and type(value) is type(pattern) and value == pattern


def _get_attr(value: Any) -> bool:
    return isinstance(value, Node) and value.op == "get_attr"


def _pairs(x_dq: Node, w_dq: Node) -> tuple[Node, Node, Node, Node | None, int | None, Fp8Gemm] | None:
    """``(x, w_q, w_scale, x_scale, block_size, gemm)`` for the first (by name) (activation mode, weight
    granularity) pair of one GEMM whose fake-quant patterns (as ``fp8_convert`` writes them, recorded from the
    descriptors) the two inputs of a linear have; None when no pair fits."""
    for mode_name in ACTIVATION_MODES:
        mode = ACTIVATION_MODES.get(mode_name)
        x, x_scale, block, w_q, w_s = _Hole(), _Hole(), _Hole(), _Hole(), _Hole()
        x_pattern = mode.fake_quant(_record, x, x_scale if mode.calibrated else None, block, _Hole())
        env: dict[int, Any] = {}
        if not _unify(x_pattern, x_dq, env):
            continue
        for weight_name in WEIGHT_GRANULARITIES:
            granularity = WEIGHT_GRANULARITIES.get(weight_name)
            if granularity.gemm is not mode.gemm:
                continue
            both = dict(env)  # the block size binds across the two inputs
            if not _unify(granularity.dequantize(_record, w_q, w_s, block, _Hole()), w_dq, both):
                continue
            size = both.get(id(block))
            static = both.get(id(x_scale))
            if not (isinstance(both[id(x)], Node) and _get_attr(both[id(w_q)]) and _get_attr(both[id(w_s)])
                    and (size is None or type(size) is int) and (static is None or _get_attr(static))):
                continue
            return both[id(x)], both[id(w_q)], both[id(w_s)], static, size, mode.gemm
    return None


def match_fp8_linear(linear: Node) -> Fp8LinearMatch | None:
    """The FP8 GEMM a fake-quant ``aten.linear`` folds into, or None when it is not one."""
    if linear.target is not aten.linear.default:
        return None
    x_dq, w_dq = linear.args[0], linear.args[1]
    if not (isinstance(x_dq, Node) and isinstance(w_dq, Node)):
        return None
    pair = _pairs(x_dq, w_dq)
    if pair is None:
        return None
    x, w_q, w_s, x_scale, block_size, gemm = pair
    out, x_val = tensor_meta(linear), tensor_meta(x)
    if out is None or x_val is None or out.dtype != x_val.dtype:
        return None
    bias = linear.args[2] if len(linear.args) > 2 else linear.kwargs.get("bias")
    return Fp8LinearMatch(linear, x, w_q, w_s, bias, x_scale, block_size, gemm)


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
                new = graph.call_function(m.gemm.op, m.gemm.arguments(m.x, m.w_q, m.w_scale, m.bias, m.x_scale,
                                                                      m.block_size))
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
    """The FP8 GEMM nodes of a lowered graph (the ops of the registered ``Fp8Gemm`` descriptors)."""
    return [n for n in gm.graph.nodes if fp8_gemm(n.target) is not None]


__all__ = ["PLAN", "Fp8LinearMatch", "fp8_gemms", "match_fp8_linear"]
