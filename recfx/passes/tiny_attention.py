"""Attention over a handful of tokens as elementwise math that Inductor fuses, instead of a flash-attention kernel.

Flash-attention kernels tile the query rows by 64 or 128: an attention whose query and key lengths are a few tokens
(OneRec's causal self-attention over the 1-3 target tokens of each beam: 16,384 sequences x 16 heads per call at
batch 32) launches one mostly empty tile per sequence and head. Written as math, the same attention is two small
reductions and a softmax that Inductor fuses into a few memory-bound kernels::

    s = sum_d (q * scale)[..., i, d] * k[..., j, d]      (float32)
    s = masked (causal: j <= i, or the mask)
    out = sum_j softmax(s)[..., i, j] * v[..., j, :]     (float32, then the input dtype)

The function is SDPA's definition computed in float32 (float64 for float64 inputs), as SDPA's math backend does; the
values differ from a flash kernel's by rounding only. Rewritten: ``aten.scaled_dot_product_attention`` with static
query and key lengths of at most :data:`MAX_TOKENS`, no dropout, equal head counts (or GQA already folded), a mask
that is None, boolean or additive; the output keeps the replaced node's memory layout.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.fold_gqa import same_layout, sdpa_args
from recfx.passes.quant.convert import fresh_buffer
from recfx.passes.utils import fill_meta, finish, force_strides_op, is_impure, substitute, tensor_meta

log = logging.getLogger(__name__)
aten = torch.ops.aten
_SDPA = aten.scaled_dot_product_attention.default

#: Longest query / key length rewritten (a flash kernel's smallest tile is 16 or more rows).
MAX_TOKENS = 8


def _tiny(node: Node) -> tuple[int, int, float] | None:
    """(query length, key length, scale) of an attention this pass rewrites, else None."""
    args = sdpa_args(node)
    q, k, v = (tensor_meta(args[name]) for name in ("query", "key", "value"))
    if q is None or k is None or v is None or q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        return None
    n, s, d = q.shape[-2], k.shape[-2], q.shape[-1]
    if not all(isinstance(x, int) for x in (n, s, d)) or n > MAX_TOKENS or s > MAX_TOKENS or n < 1 or s < 1:
        return None
    if float(args.get("dropout_p", 0.0)) != 0.0 or args.get("enable_gqa", False):
        return None
    if args.get("is_causal", False) and args.get("attn_mask") is not None:
        return None  # SDPA refuses both: leave it the error
    if q.dim() >= 3 and not (q.shape[-3] == k.shape[-3] == v.shape[-3]):
        return None
    mask = tensor_meta(args.get("attn_mask"))
    if args.get("attn_mask") is not None and (mask is None or not (mask.dtype == torch.bool
                                                                    or mask.is_floating_point())):
        return None
    scale = args.get("scale")
    return n, s, float(scale) if scale is not None else 1.0 / math.sqrt(d)


def _contiguous_strides(shape: Any) -> list[int] | None:
    """Row-major strides of ``shape`` when every size but the first is static (the first may be a symbolic batch)."""
    sizes = list(shape)[1:]
    if not all(isinstance(x, int) for x in sizes):
        return None
    strides = [1]
    for size in reversed(sizes):
        strides.insert(0, strides[0] * size)
    return strides


def _probs_strides(args: dict[str, Any], s: int) -> list[int] | None:
    """Row-major strides of the probabilities ``(..., n, s)``: where q's and k's sizes agree past the batch dim (the
    scores then have q's leading sizes; SDPA refuses a mask that would widen them), else None."""
    q, k = tensor_meta(args["query"]), tensor_meta(args["key"])
    if q is None or k is None:
        return None
    lead_q, lead_k = tuple(q.shape[1:-2]), tuple(k.shape[1:-2])
    if not all(isinstance(x, int) for x in lead_q + lead_k) or lead_q != lead_k:
        return None
    return _contiguous_strides((*q.shape[:-1], s))


@register_pass("lower_tiny_attention", stage="lower")
class LowerTinyAttention:
    """No SDPA over at most MAX_TOKENS query and key tokens is left to a flash-attention kernel.

    Where ``backend_options["realize_permuted"]`` is True the probabilities are also realized once."""

    def __init__(self, ctx: PassContext) -> None:
        self.realize_probs = ctx.backend_options.get("realize_permuted", False) is True

    def __call__(self, gm: GraphModule) -> PassResult:
        return lower_tiny_attention(gm, realize_probs=self.realize_probs)


def lower_tiny_attention(gm: GraphModule, *, realize_probs: bool = False) -> PassResult:
    """No SDPA over at most MAX_TOKENS query and key tokens is left to a flash-attention kernel.

    ``realize_probs``: the softmax probabilities (a small (..., n, s) tensor) are computed once, as their own
    tensor (``prims.inductor_force_stride_order``), instead of being recomputed inside whatever kernel reads them:
    the attention output is then a few loads and multiply-adds per element, small enough for Inductor to fuse into
    the kernel that quantizes it (``cuda-fp8``'s ``realize_permuted``)."""
    graph = gm.graph
    done = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target is _SDPA):
            continue
        found = _tiny(node)
        if found is None:
            continue
        n, s, scale = found
        args = sdpa_args(node)
        dtype = tensor_meta(node).dtype  # type: ignore[union-attr]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        new: list[Node] = []

        def call(op: Any, *a: Any, **kw: Any) -> Node:
            out = graph.call_function(op, a, kw)
            new.append(out)
            return out

        with graph.inserting_before(node):
            q, k, v = (call(aten._to_copy.default, args[name], dtype=acc)
                       for name in ("query", "key", "value"))
            q = call(aten.mul.Tensor, q, scale)
            prod = call(aten.mul.Tensor, call(aten.unsqueeze.default, q, -2), call(aten.unsqueeze.default, k, -3))
            scores = call(aten.sum.dim_IntList, prod, [-1])  # (..., n, s)
            mask = args.get("attn_mask")
            if args.get("is_causal", False):
                device = tensor_meta(args["query"]).device  # type: ignore[union-attr]
                tril = torch.ones(n, s, dtype=torch.bool, device=device).tril()
                mask = graph.get_attr(fresh_buffer(gm, "causal_tril", tril))
                new.append(mask)
                fill_meta(gm, [mask])
            mask_val = tensor_meta(mask)
            if mask is not None and mask_val is not None and mask_val.dtype == torch.bool:
                scores = call(aten.masked_fill.Scalar, scores, call(aten.logical_not.default, mask), float("-inf"))
            elif mask is not None:
                scores = call(aten.add.Tensor, scores, call(aten._to_copy.default, mask, dtype=acc))
            probs = call(aten._softmax.default, scores, -1, False)
            strides = _probs_strides(args, s) if realize_probs else None
            if strides is not None:
                probs = call(force_strides_op(), probs, strides)
            weighted = call(aten.mul.Tensor, call(aten.unsqueeze.default, probs, -1),
                            call(aten.unsqueeze.default, v, -3))  # (..., n, s, dv)
            out = call(aten._to_copy.default, call(aten.sum.dim_IntList, weighted, [-2]), dtype=dtype)
            out, laid = same_layout(graph, out, tensor_meta(node))
            new += laid + ([out] if laid else [])
        substitute(gm, node, out, new)
        done += 1
    if done:
        graph.eliminate_dead_code(is_impure_node=is_impure)
        finish(gm)
    return PassResult(gm, bool(done), done, f"{done} attention(s) over <= {MAX_TOKENS} tokens as fused math")
