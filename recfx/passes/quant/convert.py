"""``fp8_convert``: quantize the weights offline and put quantize -> dequantize pairs on the activations.

After this pass the graph computes FP8 numerics in "fake quant" form (float GEMMs over dequantized operands):

    x -> quantize_fp8[_per_token|_groups] -> dequantize_fp8[_blocks] -> linear <- dequantize_fp8[_blocks] <- w_q

``fp8_lower`` then folds each such linear into one FP8 GEMM op. One Q/DQ pair serves every linear reading the same
activation tensor (q/k/v share theirs); one FP8 weight serves every call of a module.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.ops.fp8 import quantize_weight, scale_from_amax
from recfx.ops.fp8_terms import activation_mode, weight_granularity
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.state import (
    BUFFER_PREFIX,
    PLAN,
    Fp8State,
    LayerPlan,
    node_arg,
    observers,
    plans,
)
from recfx.passes.utils import fetch_attr, fill_meta, finish, is_impure, mutated_values, tensor_meta

log = logging.getLogger(__name__)


def fresh_buffer(gm: GraphModule, base: str, value: torch.Tensor) -> str:
    """Register ``value`` as a new top-level buffer of ``gm`` under a free name derived from ``base``."""
    name = BUFFER_PREFIX + re.sub(r"\W", "_", base)
    candidate, i = name, 0
    while hasattr(gm, candidate):
        i += 1
        candidate = f"{name}_{i}"
    gm.register_buffer(candidate, value)
    return candidate


class _Builder:
    """Creates (and reuses) the FP8 weight buffers and the activation Q/DQ nodes of one graph."""

    def __init__(self, gm: GraphModule, made: dict[tuple[str, str, int | None], Any] | None = None) -> None:
        self.gm = gm
        self.made = made or {}  # FP8 copies fp8_evaluate already made (Fp8State.weights)
        self.weights: dict[tuple[Any, ...], Node] = {}
        self.activations: dict[tuple[Any, ...], Node] = {}
        self.mutated = mutated_values(gm)

    def _attr(self, base: str, value: torch.Tensor, before: Node) -> Node:
        name = fresh_buffer(self.gm, base, value)
        with self.gm.graph.inserting_before(before):
            return self.gm.graph.get_attr(name)

    def _call(self, op: Any, *args: Any) -> Node:
        return self.gm.graph.call_function(op, args)

    def weight(self, linear: Node, plan: LayerPlan, dtype: torch.dtype) -> Node:
        w_node = node_arg(linear, 1)
        key = (w_node.target, plan.weight, plan.block_size, dtype)
        if key not in self.weights:
            w = fetch_attr(self.gm, str(w_node.target))
            made = self.made.get((str(w_node.target), plan.weight, plan.block_size))
            if made is not None and made[0] is w:  # the probe's copy of this very tensor
                w_q, w_s = made[1], made[2]
            else:
                w_q, w_s = quantize_weight(w, plan.weight, plan.block_size)  # new tensors; w itself is untouched
            q_node = self._attr(f"{w_node.target}_fp8", w_q, linear)
            s_node = self._attr(f"{w_node.target}_scale", w_s, linear)
            with self.gm.graph.inserting_before(linear):
                dq = weight_granularity(plan.weight).dequantize(self._call, q_node, s_node, plan.block_size, dtype)
            self.weights[key] = dq
        return self.weights[key]

    def activation(self, x: Node, linear: Node, plan: LayerPlan, dtype: torch.dtype, device: torch.device) -> Node:
        # a tensor written in place is quantized where each linear reads it, never shared across the write
        key = (x, linear if x in self.mutated else None, plan.activation, plan.block_size, plan.x_amax)
        if key in self.activations:
            return self.activations[key]
        mode = activation_mode(plan.activation)
        s = None
        if mode.calibrated:
            assert plan.x_amax is not None, f"{plan.name}: static layer without a calibrated amax"
            scale = scale_from_amax(torch.tensor(plan.x_amax)).to(device)  # on the weights' device
            s = self._attr(f"{plan.name}_input_scale", scale, linear)
        with self.gm.graph.inserting_before(linear):
            dq = mode.fake_quant(self._call, x, s, plan.block_size, dtype)
        self.activations[key] = dq
        return dq


def remove_observers(gm: GraphModule) -> int:
    """Bypass and delete every observer node and submodule."""
    obs = observers(gm)
    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target in obs:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            count += 1
    for name in obs:
        delattr(gm, name)
    return count


def erase_unused_attrs(gm: GraphModule, targets: set[str]) -> int:
    """Delete attributes (the float weights) that no get_attr node reads any more; they belong to the graph module's
    own submodules, never to the user's model."""
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    removed = 0
    for target in sorted(targets - used):
        owner_path, _, name = target.rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        if hasattr(owner, name):
            delattr(owner, name)
            removed += 1
    return removed


def _fake_quant_inputs(gm: GraphModule) -> list[str]:
    bad = [f"{n.name}: observer left" for n in gm.graph.nodes if n.op == "call_module" and "_fp8_observer_" in
           str(n.target)]
    for node, _ in plans(gm):
        if node.target is torch.ops.aten.linear.default:
            x, w = node.args[0], node.args[1]
            if not (isinstance(x, Node) and "dequantize_fp8" in str(x.target)
                    and isinstance(w, Node) and "dequantize_fp8" in str(w.target)):
                bad.append(f"{node.name}: annotated linear without dequantized inputs")
    return bad


@register_pass("fp8_convert", stage="quantize", postcondition=_fake_quant_inputs)
class Fp8Convert:
    """Every annotated linear reads dequantize(quantize(x)) and dequantize(fp8 weight buffer); no observer is left."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        todo = plans(gm)
        float_weights = {str(node_arg(n, 1).target) for n, _ in todo}
        remove_observers(gm)
        state = Fp8State.of(self.ctx)
        build = _Builder(gm, state.weights)
        for node, plan in todo:
            x = node_arg(node, 0)
            x_val = tensor_meta(x)
            assert x_val is not None, f"{node.name}: activation without metadata"
            dtype, device = x_val.dtype, fetch_attr(gm, str(node_arg(node, 1).target)).device
            dq_w = build.weight(node, plan, dtype)
            dq_x = build.activation(x, node, plan, dtype, device)
            node.args = (dq_x, dq_w, *node.args[2:])
            node.meta[PLAN] = plan
        state.weights.clear()  # the ones the graph uses are its buffers now
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        erase_unused_attrs(gm, float_weights)
        fill_meta(gm)
        finish(gm)
        log.info("fp8_convert: %d linears, %d FP8 weights, %d activation Q/DQ pairs", len(todo), len(build.weights),
                 len(build.activations))
        return PassResult(gm, modified=bool(todo), changed_nodes=len(todo),
                          detail=f"{len(build.weights)} FP8 weights, {len(build.activations)} activation Q/DQ")
