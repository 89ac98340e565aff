"""Routed mixture-of-experts: each token runs only its top-k experts, all experts in one grouped GEMM launch.

A MoE layer written for export computes every expert on every token and weights the outputs by a dense routing
matrix that is zero except at the top-k experts of each token::

    weights = zeros_like(probs).scatter(-1, top_i, top_w)          # (..., E)
    out = base + weights[..., 0:1] * expert_0(x) + weights[..., 1:2] * expert_1(x) + ...

This pass finds that form (SwiGLU experts ``w2(silu(w1 x) * w3 x)`` without biases, all reading the same ``x``)
and replaces it with the routed computation: the (token, expert) pairs sorted by expert, the tokens gathered, one
``aten._grouped_mm`` per projection over all experts (``offs`` = where each expert's rows end), and each token's k
weighted outputs added to ``base`` in the order the original sum adds them. For FP8 experts
(``recfx::fp8_linear``, per-channel weights, per-token activations) the GEMMs are ``aten._scaled_grouped_mm`` with
the same quantized weights and scales, and each token's activation is quantized once, as the dense form does.
Block-scaled FP8 experts (``recfx::fp8_linear_blocks``: the ``QuantConfig.onerec_v2()`` recipe's 1 x B activation
groups and B x B weight blocks) run on ``recfx::fp8_block_mm`` grouped (one Triton launch per projection over all
experts, the weights stacked ``(E, N, K)`` as stored), each token quantized once in 1 x B groups.

What stays the same: an unrouted expert adds ``0 * y``, which is +-0 for a finite ``y``, so the routed sum adds the
same non-zero terms in the same order (the one difference: an unrouted expert whose output is inf or NaN makes the
dense sum NaN, the routed one does not run it; ``backend_options={"route_moe": False}`` keeps the dense form);
each term's GEMM is a different kernel (grouped instead of dense), so values
agree to the kernels' rounding, not bit for bit. The rewrite needs: the routing matrix built by ``scatter`` into
zeros from a ``topk``'s indices along the last axis, read only by one ``[..., i:i+1]`` slice per expert, each slice
times one expert, the products summed in one chain whose base has the output's shape; static E, k, d and hidden
sizes. Anything else is left alone.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.ops.fp8_block_mm import OUT_DTYPES, quantize_groups
from recfx.ops.fp8_linear import DEFAULT_BLOCK_SIZE
from recfx.ops.fp8_rows import quantize_per_token
from recfx.ops.fp8_terms import BLOCK_SIZES
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.convert import erase_unused_attrs, fresh_buffer
from recfx.passes.utils import fetch_attr, fill_meta, finish, is_impure, mutated_values, same_shape, tensor_meta

log = logging.getLogger(__name__)
aten = torch.ops.aten
_ZEROS = (aten.zeros_like.default, aten.zeros.default, aten.new_zeros.default)


@dataclasses.dataclass
class _Expert:
    w1: Node  # get_attr of the (f, d) weight, or of the FP8 weight for fp8 experts
    w3: Node
    w2: Node
    scales: tuple[Node, Node, Node] | None  # FP8: (s1, s3, s2) get_attr of the per-channel or block scales
    block: int | None = None  # block-scaled FP8 (fp8_linear_blocks): the block size B


@dataclasses.dataclass
class _Moe:
    x: Node  # the experts' shared input (..., d)
    indices: Node  # top-k indices (..., k)
    weights: Node  # the routing weights scattered (..., k)
    experts: list[_Expert]  # in the order the chain adds them
    expert_ids: list[int]  # the expert index (slice position) of each chain term
    base: Node  # what the chain starts from
    end: Node  # the chain's last add (the MoE output)
    fp8: bool


def _call(node: Any, *targets: Any) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def _shape(node: Any) -> tuple[Any, ...] | None:
    val = tensor_meta(node)
    return tuple(val.shape) if val is not None else None


def _only_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _linear(node: Any, fp8: bool) -> tuple[Any, Any, tuple[Any, ...], int | None] | None:
    """(input, weight get_attr, FP8 scale get_attr, block size or None) of a bias-free linear of the wanted kind."""
    if not fp8 and _call(node, aten.linear.default):
        if len(node.args) > 2 and node.args[2] is not None:
            return None
        x, w = node.args[0], node.args[1]
        return (x, w, (), None) if isinstance(w, Node) and w.op == "get_attr" else None
    blocks = _call(node, torch.ops.recfx.fp8_linear_blocks.default)
    if fp8 and (blocks or _call(node, torch.ops.recfx.fp8_linear.default)):
        args = list(node.args) + [None] * (6 - len(node.args))
        x, w, s, bias, fifth = args[:5]
        bias = node.kwargs.get("bias", bias)
        if blocks:  # fp8_linear_blocks(x, w_q, w_scale, bias, block_size, out_dtype)
            block = node.kwargs.get("block_size", fifth)
            block, x_scale = (DEFAULT_BLOCK_SIZE if block is None else block), None
        else:  # fp8_linear(x, w_q, w_scale, bias, x_scale, out_dtype)
            block, x_scale = None, node.kwargs.get("x_scale", fifth)
        if bias is not None or x_scale is not None or not isinstance(block, (int, type(None))):
            return None  # per-token (or 1 x B) dynamic activations, no bias, a static block size
        ok = all(isinstance(n, Node) and n.op == "get_attr" for n in (w, s))
        out, xv = tensor_meta(node), tensor_meta(x)
        if out is None or xv is None or out.dtype != xv.dtype:  # an out_dtype other than the input's
            return None
        return (x, w, (s,), block) if ok else None
    return None


def _swiglu(y: Any, fp8: bool) -> tuple[Node, _Expert] | None:
    """(x, expert) for ``w2(silu(w1 x) * w3 x)``."""
    down = _linear(y, fp8)
    if down is None or not _call(down[0], aten.mul.Tensor):
        return None
    a: Any = down[0].args[0]
    b: Any = down[0].args[1]
    for gate, up in ((a, b), (b, a)):
        if _call(gate, aten.silu.default):
            g, u = _linear(gate.args[0], fp8), _linear(up, fp8)
            if g is not None and u is not None and g[0] is u[0] and g[3] == u[3] == down[3]:
                scales = (g[2][0], u[2][0], down[2][0]) if fp8 else None
                return g[0], _Expert(g[1], u[1], down[1], scales, g[3])
    return None


def _expert_slice(node: Node, last: int, experts: int) -> int | None:
    """i for ``weights[..., i:i+1]``."""
    if not _call(node, aten.slice.Tensor) or len(node.args) < 4:
        return None
    dim, start, end = node.args[1], node.args[2], node.args[3]
    step = node.args[4] if len(node.args) > 4 else 1
    if dim not in (last, -1) or step != 1 or not isinstance(start, int) or end != start + 1:
        return None
    return start if 0 <= start < experts else None


def _match(scatter: Node, mutated: set[Node]) -> _Moe | None:
    args: list[Any] = [*scatter.args, None, None, None, None]
    zeros, dim, index, src = args[:4]
    shape = _shape(scatter)
    if shape is None or not _call(zeros, *_ZEROS) or not isinstance(shape[-1], int):
        return None
    last, experts = len(shape) - 1, int(shape[-1])
    if dim not in (-1, last) or not (_call(index, operator.getitem) and index.args[1] == 1):
        return None
    topk: Any = index.args[0]
    if not _call(topk, aten.topk.default):
        return None
    topk_dim = topk.args[2] if len(topk.args) > 2 else topk.kwargs.get("dim", -1)
    k = topk.args[1]
    if topk_dim not in (-1, last) or not isinstance(k, int) or not isinstance(src, Node):
        return None
    if not same_shape(src, index) or not same_shape(index, (*shape[:-1], k)):
        return None
    terms: dict[Node, int] = {}  # mul node -> expert index
    experts_of: dict[Node, _Expert] = {}
    x_seen: Node | None = None
    fp8: bool | None = None
    for user in scatter.users:
        i = _expert_slice(user, last, experts)
        mul = _only_user(user)
        if i is None or mul is None or not _call(mul, aten.mul.Tensor) or i in terms.values():
            return None
        other: Any = mul.args[1] if mul.args[0] is user else mul.args[0]
        kind, found = False, _swiglu(other, fp8=False)
        if found is None:
            kind, found = True, _swiglu(other, fp8=True)
        if found is None or fp8 not in (None, kind) or (x_seen is not None and found[0] is not x_seen):
            return None
        fp8 = kind
        x_seen = found[0]
        terms[mul], experts_of[mul] = i, found[1]
    if len(terms) != experts or x_seen is None or fp8 is None:
        return None
    chain = _chain(terms)
    if chain is None:
        return None
    base, order, end = chain
    xs = _shape(x_seen)
    if xs is None or not same_shape(base, end) or not same_shape(x_seen, end) or not same_shape(index, (*xs[:-1], k)):
        return None  # routing that broadcasts over tokens (e.g. pooled) is not one choice per token
    weights = [n for ex in experts_of.values() for n in (ex.w1, ex.w3, ex.w2, *(ex.scales or ()))]
    if {x_seen, index, src, zeros, scatter, *weights} & mutated:
        return None  # a write to the zeros, the weights (copied at compile time) or the inputs changes the sum
    return _Moe(x_seen, index, src, [experts_of[m] for m in order], [terms[m] for m in order], base, end, fp8)


def _chain(terms: dict[Node, int]) -> tuple[Node, list[Node], Node] | None:
    """``add(add(add(base, t_a), t_b), ...)`` over every term once: (base, terms in order, last add)."""
    adds: dict[Node, tuple[Node, Any]] = {}  # add -> (its term, what it adds the term to)
    for mul in terms:
        add = _only_user(mul)
        if add is None or not _call(add, aten.add.Tensor) or len(add.args) != 2 or add.kwargs or add in adds:
            return None
        adds[add] = (mul, add.args[0] if add.args[1] is mul else add.args[1])
    firsts = [add for add, (_, acc) in adds.items() if acc not in adds]
    if len(firsts) != 1 or not isinstance(adds[firsts[0]][1], Node) or adds[firsts[0]][1] in terms:
        return None
    add, order = firsts[0], []
    base = adds[add][1]
    while True:
        order.append(adds[add][0])
        nxt = _only_user(add)
        if nxt is None or nxt not in adds:
            break
        add = nxt  # nxt adds its term to ``add`` (nxt's accumulator is a key of ``adds`` only via this link)
    return (base, order, add) if len(order) == len(terms) else None


class _Emitter:
    def __init__(self, gm: GraphModule, fast_accum: bool, exact_quant: bool) -> None:
        self.gm, self.graph, self.fast_accum, self.exact_quant = gm, gm.graph, fast_accum, exact_quant

    def call(self, op: Any, *args: Any, **kwargs: Any) -> Node:
        return self.graph.call_function(op, args, kwargs)

    def buffer(self, base: str, value: torch.Tensor) -> Node:
        return self.graph.get_attr(fresh_buffer(self.gm, base, value))

    def stacked(self, nodes: list[Node], base: str) -> Node:
        """(E, ...) of the experts' weights, seen as (E, in, out): the column-major operand the grouped GEMM takes."""
        value = torch.stack([fetch_attr(self.gm, str(n.target)) for n in nodes])
        return self.call(aten.transpose.int, self.buffer(base, value.contiguous()), -2, -1)

    def rows_stacked(self, nodes: list[Node], base: str) -> Node:
        """(E, ...) of the experts' tensors as stored (weights (E, N, K) row-major, the operand ``fp8_block_mm``
        takes, or their scales)."""
        return self.buffer(base, torch.stack([fetch_attr(self.gm, str(n.target)) for n in nodes]).contiguous())

    def scales(self, nodes: list[Node], rows: int, base: str) -> Node:
        value = torch.stack([fetch_attr(self.gm, str(n.target)).reshape(-1).expand(rows) for n in nodes])
        return self.buffer(base, value.to(torch.float32).contiguous())  # (E, out)

    def row_experts(self, moe: _Moe, name: str, x: Node, rows: Node, offs: Node, d: int,
                    dtype: torch.dtype) -> Node:
        """The experts on torch's grouped GEMMs (bf16, or FP8 per-channel weights and per-token activations)."""
        w1 = self.stacked([ex.w1 for ex in moe.experts], f"{name}_w1")
        w3 = self.stacked([ex.w3 for ex in moe.experts], f"{name}_w3")
        w2 = self.stacked([ex.w2 for ex in moe.experts], f"{name}_w2")
        if moe.fp8:
            f = int(fetch_attr(self.gm, str(moe.experts[0].w1.target)).shape[0])
            s1, s3, s2 = (self.scales([ex.scales[j] for ex in moe.experts], n_out, f"{name}_s{j}")  # type: ignore[index]
                          for j, n_out in ((0, f), (1, f), (2, d)))
            q, s = quantize_per_token(self.call, x, exact=self.exact_quant)  # each token once, as the dense form does
            a = self.call(aten.index_select.default, q, 0, rows)
            a_s = self.call(aten.index_select.default, self.call(aten.reshape.default, s, [-1]), 0, rows)
            g, u = self.gemm(a, a_s, w1, s1, offs, dtype), self.gemm(a, a_s, w3, s3, offs, dtype)
            h = self.call(aten.mul.Tensor, self.call(aten.silu.default, g), u)
            hq, hs = quantize_per_token(self.call, h, exact=self.exact_quant)
            return self.gemm(self.call(aten.clone.default, hq, memory_format=torch.contiguous_format),
                             self.call(aten.reshape.default, hs, [-1]), w2, s2, offs, dtype)
        a = self.call(aten.index_select.default, x, 0, rows)
        h = self.call(aten.mul.Tensor, self.call(aten.silu.default, self.gemm(a, None, w1, None, offs, dtype)),
                      self.gemm(a, None, w3, None, offs, dtype))
        return self.gemm(h, None, w2, None, offs, dtype)  # (N*k, d), sorted by expert

    def block_experts(self, moe: _Moe, name: str, x: Node, rows: Node, offs: Node, d: int, block: int,
                      dtype: torch.dtype) -> Node:
        """Block-scaled FP8 experts on ``recfx::fp8_block_mm`` grouped: each token quantized once in 1 x B groups
        (as the dense form does), the hidden activations quantized per routed row."""
        f = int(fetch_attr(self.gm, str(moe.experts[0].w1.target)).shape[0])
        w1, w3, w2 = (self.rows_stacked([getattr(ex, w) for ex in moe.experts], f"{name}_{w}")
                      for w in ("w1", "w3", "w2"))
        s1, s3, s2 = (self.rows_stacked([ex.scales[j] for ex in moe.experts], f"{name}_s{j}")  # type: ignore[index]
                      for j in range(3))
        q, s = quantize_groups(self.call, x, d, block, exact=self.exact_quant)
        a = self.call(aten.index_select.default, q, 0, rows)
        a_s = self.call(aten.index_select.default, s, 0, rows)
        g = self.call(torch.ops.recfx.fp8_block_mm.default, a, a_s, w1, s1, offs, block, dtype, self.fast_accum)
        u = self.call(torch.ops.recfx.fp8_block_mm.default, a, a_s, w3, s3, offs, block, dtype, self.fast_accum)
        h = self.call(aten.mul.Tensor, self.call(aten.silu.default, g), u)
        hq, hs = quantize_groups(self.call, h, f, block, exact=self.exact_quant)
        return self.call(torch.ops.recfx.fp8_block_mm.default, hq, hs, w2, s2, offs, block, dtype, self.fast_accum)

    def gemm(self, a: Node, a_scale: Node | None, w: Node, w_scale: Node | None, offs: Node,
             dtype: torch.dtype) -> Node:
        if a_scale is None:
            return self.call(aten._grouped_mm.default, a, w, offs)
        return self.call(aten._scaled_grouped_mm.default, a, w, a_scale, w_scale, offs, None, None, dtype,
                         self.fast_accum)

    def emit(self, moe: _Moe, name: str) -> Node:
        xs_shape = _shape(moe.x)
        assert xs_shape is not None
        d, k = int(xs_shape[-1]), int(_shape(moe.indices)[-1])  # type: ignore[index]
        dtype = tensor_meta(moe.x).dtype  # type: ignore[union-attr]
        e = len(moe.experts)
        device = fetch_attr(self.gm, str(moe.experts[0].w1.target)).device
        lead = [self.call(aten.sym_size.int, moe.x, i) if not isinstance(s, int) else s
                for i, s in enumerate(xs_shape[:-1])]
        x = self.call(aten.reshape.default, moe.x, [-1, d])
        idx = self.call(aten.reshape.default, moe.indices, [-1, k])
        wts = self.call(aten.reshape.default, moe.weights, [-1, k])
        if moe.expert_ids == list(range(e)):  # the sum adds the experts in index order (the usual loop)
            keys = idx
        else:  # the chain position of each expert: each token's terms in the order the sum adds them
            position = torch.empty(e, dtype=torch.long)
            position[torch.tensor(moe.expert_ids)] = torch.arange(e)
            keys = self.call(aten.index.Tensor, self.buffer(f"{name}_chain_position", position.to(device)), [idx])
        per_token = self.call(aten.sort.stable, keys, stable=True, dim=-1)
        slots, perm = (self.call(operator.getitem, per_token, i) for i in (0, 1))
        wts = self.call(aten.gather.default, wts, -1, perm)
        # (N*k,) the chain position of each (token, slot)'s expert: group g runs the g-th expert the sum adds, which
        # is how the weights are stacked
        flat = self.call(aten.reshape.default, slots, [-1])
        by_expert = self.call(aten.sort.stable, flat, stable=True, dim=0)
        sorted_e, order = (self.call(operator.getitem, by_expert, i) for i in (0, 1))
        rows = self.call(aten.div.Scalar_mode, order, k, rounding_mode="floor")  # the token of each sorted pair
        ids = self.buffer(f"{name}_expert_ids", torch.arange(e, device=device))
        offs = self.call(aten.searchsorted.Tensor, sorted_e, ids, out_int32=True, right=True)  # where rows end
        block = moe.experts[0].block
        if block is not None:
            y = self.block_experts(moe, name, x, rows, offs, d, block, dtype)
        else:
            y = self.row_experts(moe, name, x, rows, offs, d, dtype)
        w_sorted = self.call(aten.index_select.default, self.call(aten.reshape.default, wts, [-1]), 0, order)
        terms = self.call(aten.mul.Tensor, y, self.call(aten.unsqueeze.default, w_sorted, -1))
        inverse = self.call(operator.getitem, self.call(aten.sort.stable, order, stable=True, dim=0), 1)
        terms = self.call(aten.reshape.default, self.call(aten.index_select.default, terms, 0, inverse), [-1, k, d])
        out = self.call(aten.reshape.default, moe.base, [-1, d])
        for j in range(k):
            out = self.call(aten.add.Tensor, out, self.call(aten.select.int, terms, 1, j))
        return self.call(aten.reshape.default, out, [*lead, d])


class _RouteMoe:
    def __init__(self, fp8: bool, fast_accum: bool = True, exact_quant: bool = False, cuda_only: bool = True) -> None:
        self.fp8, self.fast_accum, self.exact_quant, self.cuda_only = fp8, fast_accum, exact_quant, cuda_only

    def __call__(self, gm: GraphModule) -> PassResult:
        emitter = _Emitter(gm, self.fast_accum, self.exact_quant)
        found: list[_Moe] = []
        while True:  # one layer at a time: a layer whose input is the previous layer's output reads the routed one
            mutated = mutated_values(gm)
            moe = next((m for n in gm.graph.nodes if _call(n, aten.scatter.src) for m in [_match(n, mutated)]
                        if m is not None and m.fp8 == self.fp8 and _supported(gm, m, self.cuda_only)), None)
            if moe is None:
                break
            with gm.graph.inserting_before(moe.end):
                out = emitter.emit(moe, f"moe{len(found)}")
            moe.end.replace_all_uses_with(out)
            gm.graph.eliminate_dead_code(is_impure_node=is_impure)
            fill_meta(gm)
            found.append(moe)
        if found:
            weights = {str(n.target) for m in found for ex in m.experts
                       for n in (ex.w1, ex.w3, ex.w2, *(ex.scales or ()))}
            erase_unused_attrs(gm, weights)
            fill_meta(gm)
            finish(gm)
            log.info("route_moe_experts: %d MoE layer(s) routed", len(found))
        return PassResult(gm, bool(found), len(found), f"{len(found)} MoE layer(s) on grouped GEMMs")


def _supported(gm: GraphModule, moe: _Moe, cuda_only: bool) -> bool:
    """Static sizes the grouped GEMMs take (d and the hidden size multiples of 16, and of the block for block-scaled
    experts, which share one block size and scale layout), bf16 activations (any of ``OUT_DTYPES`` for block-scaled
    ones), FP8 on CUDA."""
    shapes = [tuple(fetch_attr(gm, str(n.target)).shape) for ex in moe.experts for n in (ex.w1, ex.w3, ex.w2)]
    if len(shapes[0]) != 2 or any(s != shapes[i % 3] for i, s in enumerate(shapes)):
        return False  # every expert the same sizes
    f, d = shapes[0]
    if f % 16 or d % 16 or shapes[1] != shapes[0] or shapes[2] != (d, f) or _shape(moe.indices)[-1] < 1:  # type: ignore[index]
        return False
    device = fetch_attr(gm, str(moe.experts[0].w1.target)).device
    dtype = tensor_meta(moe.x).dtype  # type: ignore[union-attr]
    if moe.fp8 and cuda_only and device.type != "cuda":
        return False  # the FP8 grouped GEMMs are CUDA (sm_90) kernels
    blocks = {ex.block for ex in moe.experts}
    block = blocks.pop() if len(blocks) == 1 else -1
    if block is None:
        return dtype == torch.bfloat16  # torch's grouped GEMMs take (and write) bf16
    if block not in BLOCK_SIZES or d % block or f % block:
        return False  # recfx::fp8_block_mm: a block size its kernel takes, K a multiple of it (group quantization)
    scale_shapes = [tuple(fetch_attr(gm, str(n.target)).shape) for ex in moe.experts for n in ex.scales or ()]
    if any(shape != scale_shapes[i % 3] for i, shape in enumerate(scale_shapes)):
        return False  # the experts' scales stack: the same layout (B x B blocks or 1 x B groups) for every expert
    return dtype in OUT_DTYPES


@register_pass("route_moe_experts", stage="lower")
def route_moe_experts(gm: GraphModule) -> PassResult:
    """No dense all-experts MoE sum of high-precision SwiGLU experts remains where a grouped GEMM can run it."""
    return _RouteMoe(fp8=False)(gm)


@register_pass("route_moe_experts_fp8", stage="lower")
class RouteMoeFp8:
    """No dense all-experts MoE sum of FP8 SwiGLU experts (per-channel or block-scaled) remains where a grouped FP8
    GEMM can run it."""

    def __init__(self, ctx: PassContext) -> None:
        options = ctx.backend_options
        self.run = _RouteMoe(fp8=True, fast_accum=bool(options.get("fast_accum", True)),
                             exact_quant=bool(options.get("exact_quant", False)))

    def __call__(self, gm: GraphModule) -> PassResult:
        return self.run(gm)


__all__ = ["RouteMoeFp8", "route_moe_experts"]
