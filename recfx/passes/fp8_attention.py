"""``lower_fp8_attention``: plain attentions as ``recfx::fp8_attention`` (``cuda-fp8``, opt-in).

Attention scores and softmax stay in high precision unless the user asks otherwise (docs/fp8.md, "What is
quantized"). With ``backend_options={"fp8_attention": True}``, each ``aten.scaled_dot_product_attention`` that is
a plain attention becomes the FP8 attention op (``recfx.ops.fp8_attention``): its queries, keys and values are
quantized by aten ops Inductor fuses into their producers (:func:`~recfx.ops.fp8_attention.quantize_tokens`,
:func:`~recfx.ops.fp8_attention.quantize_values`), once per tensor however many attentions read it.

Rewritten: 4-D query, key and value of one dtype (bf16, fp16 or fp32) with static head counts and head dims (the
batch, the query rows and the keys may be dynamic), equal batch, head and key counts (GQA folded first by
``fold_gqa_attention``, or none), one head dim for Q, K and V that the kernel takes
(``recfx.ops.fp8_attention.HEAD_DIMS``), no mask, not causal, no dropout, and Q/K/V whose storage is never written
in place in the graph (a quantized copy is a snapshot shared by every attention reading that tensor). The output keeps
the replaced node's memory layout: the op writes contiguous or SDPA's (B, N, H, D) order itself; another layout with
static strides costs a copy, and one with symbolic strides is left alone. Everything else is left alone; attentions
over a few tokens were already written as math by ``lower_tiny_attention``.

Speed: on an H100 (BENCHMARKS.md run 4) the kernel took 2.3x the time of cuDNN's bf16 flash attention on onerec-1b's
cross-attentions; the option is for accuracy studies and a faster kernel, not for speed today.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import statically_known_true

from recfx.ops.fp8_attention import HEAD_DIMS, QUERY_DTYPES, quantize_tokens, quantize_values
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.fold_gqa import same_layout, sdpa_args
from recfx.passes.utils import finish, is_impure, mutated_values, substitute, tensor_meta

log = logging.getLogger(__name__)
aten = torch.ops.aten
_SDPA = aten.scaled_dot_product_attention.default
#: ``CompileConfig.backend_options`` keys this pass reads.
OPTIONS = ("fp8_attention",)


def _plain(node: Node, mutated: set[Node]) -> float | None:
    """The softmax scale of an attention this pass rewrites, else None."""
    args = sdpa_args(node)
    q, k, v = (tensor_meta(args.get(name)) for name in ("query", "key", "value"))
    if q is None or k is None or v is None or not (q.dim() == k.dim() == v.dim() == 4):
        return None
    if not all(isinstance(s, int) for s in (q.shape[1], q.shape[3], k.shape[1], k.shape[3], v.shape[1], v.shape[3])):
        return None  # heads and head dim static; batch, query rows and keys may be symbolic
    if q.dtype not in QUERY_DTYPES or not (q.dtype == k.dtype == v.dtype):
        return None
    d = q.shape[3]
    if d not in HEAD_DIMS or k.shape[3] != d or v.shape[3] != d or not q.shape[1] == k.shape[1] == v.shape[1]:
        return None
    if not all(statically_known_true(x.shape[0] == q.shape[0]) for x in (k, v)):
        return None
    if not statically_known_true(k.shape[2] == v.shape[2]) or (isinstance(k.shape[2], int) and k.shape[2] < 1):
        return None
    if args.get("attn_mask") is not None or args.get("is_causal", False) or args.get("enable_gqa", False):
        return None
    if float(args.get("dropout_p", 0.0)) != 0.0:
        return None
    if {args["query"], args["key"], args["value"]} & mutated:
        return None
    like = tensor_meta(node)
    if like is None or (_layout(like) is None and not all(isinstance(st, int) for st in like.stride())):
        return None  # an output layout neither written directly nor copied to with static strides
    scale = args.get("scale")
    return float(scale) if scale is not None else 1.0 / math.sqrt(d)


#: ops that only view their first argument: two chains of them with the same arguments from one tensor see the same
#: values (``fold_gqa_attention`` writes one ``transpose`` of the shared K/V per attention)
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.transpose.int,
          aten.permute.default, aten.unsqueeze.default, aten.squeeze.dim, aten.expand.default, aten.slice.Tensor,
          aten.select.int, aten.alias.default)


def _same_values(node: Any) -> Any:
    """A key equal for nodes that view one tensor through the same chain of view ops (hashable)."""
    if isinstance(node, Node) and node.op == "call_function" and node.target in _VIEWS and node.args:
        rest = tuple(repr(a) for a in node.args[1:]) + tuple(f"{k}={v!r}" for k, v in sorted(node.kwargs.items()))
        return (node.target, _same_values(node.args[0]), rest)
    return node


def _static_one(size: Any) -> bool:
    return isinstance(size, int) and size == 1


def _layout(like: torch.Tensor) -> bool | None:
    """The op's ``heads_inner`` that writes the replaced attention's output layout: False for contiguous (B, H, N, D),
    True for (B, N, H, D) memory (SDPA's for the usual transposed query); None for any other layout. Strides may be
    symbolic (dynamic batch or rows); size-1 dims have no stride to match."""
    _, h, n, d = like.shape
    layouts = {False: (h * n * d, n * d, d, 1), True: (n * h * d, d, h * d, 1)}
    for inner, strides in layouts.items():
        if all(_static_one(size) or statically_known_true(got == want)
               for size, got, want in zip(like.shape, like.stride(), strides)):
            return inner
    return None


@register_pass("lower_fp8_attention", stage="lower")
class LowerFp8Attention:
    """With ``fp8_attention`` on, no plain attention is left to a bf16 kernel."""

    def __init__(self, ctx: PassContext) -> None:
        self.enabled = bool(ctx.backend_options.get("fp8_attention", False))

    def __call__(self, gm: GraphModule) -> PassResult:
        if not self.enabled:
            return PassResult(gm, modified=False, detail="off (backend_options fp8_attention)")
        graph = gm.graph
        mutated = mutated_values(gm)
        quantized: dict[tuple[str, Any], tuple[Node, Node]] = {}  # one quantization per Q / K / V tensor
        done = 0
        for node in list(graph.nodes):
            if not (node.op == "call_function" and node.target is _SDPA):
                continue
            scale = _plain(node, mutated)
            if scale is None:
                continue
            args = sdpa_args(node)
            new: list[Node] = []

            def call(op: Any, *a: Any, **kw: Any) -> Node:
                created = graph.call_function(op, a, kw)
                new.append(created)
                return created

            with graph.inserting_before(node):
                keys = {kind: (kind, _same_values(args[kind])) for kind in ("query", "key", "value")}
                for kind, fn in (("query", quantize_tokens), ("key", quantize_tokens), ("value", quantize_values)):
                    if keys[kind] not in quantized:
                        quantized[keys[kind]] = fn(call, args[kind])
                operands = [x for kind in ("query", "key", "value") for x in quantized[keys[kind]]]
                like = tensor_meta(node)
                inner = _layout(like)  # type: ignore[arg-type]
                out = call(torch.ops.recfx.fp8_attention.default, *operands, scale,
                           tensor_meta(args["query"]).dtype, bool(inner))  # type: ignore[union-attr]
                if inner is None:  # contiguous out, copied to the static layout the graph after reads
                    out, laid = same_layout(graph, out, like)
                    new += [*laid, out]
            substitute(gm, node, out, new)
            done += 1
        if done:
            graph.eliminate_dead_code(is_impure_node=is_impure)
            finish(gm)
        log.info("lower_fp8_attention: %d attention(s) in FP8, %d Q/K/V quantization(s)", done, len(quantized))
        return PassResult(gm, bool(done), done, f"{done} attention(s) in FP8, {len(quantized)} Q/K/V quantized")


__all__ = ["OPTIONS", "LowerFp8Attention"]
