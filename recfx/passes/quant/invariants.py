"""What holds once the quantize stage is done (checked after every later pass with ``RECFX_DEBUG=1``)."""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from recfx.ops.fp8_terms import fp8_gemm, is_fp8_op
from recfx.passes.invariants import register_invariant
from recfx.passes.quant.lower import DEQUANTIZE, QUANTIZE
from recfx.passes.quant.state import OBSERVER_PREFIX
from recfx.passes.utils import tensor_meta


def _fp8_consumer(node: Node) -> bool:
    target = node.target
    return is_fp8_op(target) and target not in QUANTIZE


@register_invariant("quantize", "fp8_quantize_consumed")
def quantize_consumed(gm: GraphModule) -> list[str]:
    """Every FP8 quantize output feeds a dequantize or an FP8 op (never a float op)."""
    bad = []
    for node in gm.graph.nodes:
        if node.target not in QUANTIZE:
            continue
        if node.target is torch.ops.recfx.quantize_fp8.default:
            values = [node]
        else:  # (q, scale) pairs: only q must stay inside FP8 ops
            values = [g for g in node.users if g.target is operator.getitem and g.args[1] == 0]
        bad += [f"{node.name}: quantized tensor feeds {u.name} ({u.target}), not a dequantize/FP8 op"
                for v in values for u in v.users if not _fp8_consumer(u)]
    return bad


@register_invariant("quantize", "fp8_no_observers")
def no_observers(gm: GraphModule) -> list[str]:
    """No calibration observer is left in the graph."""
    return [f"{n.name}: observer {n.target} left after the quantize stage" for n in gm.graph.nodes
            if n.op == "call_module" and str(n.target).startswith(OBSERVER_PREFIX)]


@register_invariant("quantize", "fp8_gemm_weights")
def gemm_weights(gm: GraphModule) -> list[str]:
    """FP8 GEMMs read FP8 weight buffers (get_attr); no linear reads a dequantized weight (all were lowered)."""
    bad = []
    for node in gm.graph.nodes:
        if fp8_gemm(node.target) is not None:
            w = node.args[1]
            val = tensor_meta(w)
            if not (isinstance(w, Node) and w.op == "get_attr" and val is not None
                    and val.dtype == torch.float8_e4m3fn):
                bad.append(f"{node.name}: FP8 GEMM weight {w} is not an FP8 get_attr buffer")
        elif node.target is torch.ops.aten.linear.default and isinstance(node.args[1], Node) \
                and node.args[1].target in DEQUANTIZE:
            bad.append(f"{node.name}: linear over a dequantized weight was not lowered to an FP8 GEMM")
    return bad
