"""Grouped-query attention without repeated K/V: the query heads of a group become extra query rows.

A GQA attention written the usual way repeats each of the ``G`` K/V heads ``r = H / G`` times and runs SDPA on
``H`` heads: the repeat is a copy of K and V per call, and the kernel reads ``r`` identical copies. When no query row
depends on another (no causal mask, no mask that varies along the query rows, no dropout), the ``r`` query heads of
a group can be stacked along the query axis instead::

    q (B, H, N, D) -> (B, G, r*N, D);  SDPA(q', k, v) on the G K/V heads -> (B, G, r*N, D) -> (B, H, N, D)

Each output row is the same softmax(q k^T * scale) v of the same row and head: the result is the same function, not
an approximation (the kernels' summation order over keys does not change). Forms recognised for the repeated K/V:

- ``x[:, :, :, None].expand(B, T, G, r, D).reshape(B, T, G*r, D).transpose(1, 2)`` (recfx's ``repeat_kv`` on
  (B, T, G, D), then the usual transpose);
- ``x[:, :, None].expand(B, G, r, T, D).reshape(B, G*r, T, D)`` (transformers' ``repeat_kv`` on (B, G, T, D));
- ``x.repeat_interleave(r, dim=1)`` on (B, G, T, D);
- SDPA's own ``enable_gqa=True`` with (B, G, T, D) K/V.

Left alone: causal attention, masks with more than one row along the query axis or the head axis, dropout, shapes
that are not static in the head and head-dim axes, and K/V whose source tensor is written in place anywhere in the
graph (the repeat is a snapshot; reading the source at the attention could see a later write).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import finish, is_impure, mutated_values, same_shape, substitute, tensor_meta

log = logging.getLogger(__name__)
aten = torch.ops.aten

_SDPA = aten.scaled_dot_product_attention.default
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


@dataclasses.dataclass(frozen=True)
class _Source:
    """A repeated K or V: the tensor the repeat reads and how to see it as (B, G, T, D)."""

    node: Node
    groups: int  # r: query heads per K/V head
    transposed: bool  # the source is (B, T, G, D): transpose(1, 2) gives (B, G, T, D)


def _shape(node: Any) -> tuple[Any, ...] | None:
    val = tensor_meta(node)
    return tuple(val.shape) if val is not None else None


def _call(node: Any, *targets: Any) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def _static(*dims: Any) -> bool:
    return all(isinstance(d, int) for d in dims)


def _norm(dim: int, rank: int) -> int:
    return dim + rank if dim < 0 else dim


def _is_swap_1_2(node: Any) -> bool:
    """``transpose(x, 1, 2)`` / ``permute(x, [0, 2, 1, 3])`` of a rank-4 tensor."""
    if _call(node, aten.transpose.int):
        return sorted(_norm(int(d), 4) for d in node.args[1:3]) == [1, 2]
    if _call(node, aten.permute.default):
        return [_norm(int(d), 4) for d in node.args[1]] == [0, 2, 1, 3]
    return False


def _expanded_repeat(node: Any) -> _Source | None:
    """``view(clone?(expand(unsqueeze(x, d))))`` that repeats dim ``d - 1`` of a rank-4 ``x`` in place: the repeated
    copies of each head sit next to each other, as ``repeat_interleave`` would place them."""
    if not _call(node, *_VIEWS):
        return None
    inner: Any = node.args[0]
    if _call(inner, aten.clone.default):
        inner = inner.args[0]
    if not _call(inner, aten.expand.default) or not _call(inner.args[0], aten.unsqueeze.default):
        return None
    unsq: Any = inner.args[0]
    x: Any = unsq.args[0]
    xs, es, vs = _shape(x), _shape(inner), _shape(node)
    if xs is None or es is None or vs is None or len(xs) != 4 or len(es) != 5 or len(vs) != 4:
        return None
    d = _norm(int(unsq.args[1]), 5)
    if d not in (2, 3):
        return None
    r = es[d]
    head = d - 1
    if not _static(r, xs[head]) or not same_shape(inner, (*xs[:d], r, *xs[d:])):
        return None
    if not same_shape(node, (*xs[:head], xs[head] * r, *xs[head + 1:])):
        return None
    return _Source(x, int(r), transposed=head == 2)


def _repeat_source(node: Any) -> _Source | None:
    """The source of a K/V argument of shape (B, H, T, D) that repeats (B, G, T, D) heads, else None."""
    if not isinstance(node, Node):
        return None
    if _is_swap_1_2(node):  # (B, T, H, D) repeated on dim 2, then transposed to (B, H, T, D)
        src = _expanded_repeat(node.args[0])
        return src if src is not None and src.transposed else None
    if _call(node, aten.repeat_interleave.self_int):
        dim: Any = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None)
        r: Any = node.args[1]
        x: Any = node.args[0]
        xs = _shape(x)
        if xs is None or len(xs) != 4 or dim is None or _norm(int(dim), 4) != 1 or not isinstance(r, int):
            return None
        return _Source(x, r, transposed=False)
    src = _expanded_repeat(node)
    return src if src is not None and not src.transposed else None


def sdpa_args(node: Node) -> dict[str, Any]:
    args = dict(zip(_SDPA_ARGS, node.args))
    args.update(node.kwargs)
    return args


def _mask_ok(mask: Any) -> bool:
    """No mask, or one that is the same for every query row and head (a key-padding mask)."""
    if mask is None:
        return True
    shape = _shape(mask)
    if shape is None or len(shape) > 4:
        return False
    if len(shape) >= 2 and shape[-2] != 1:
        return False
    return len(shape) < 3 or shape[-3] == 1


def _sources(node: Node, args: dict[str, Any]) -> tuple[_Source, _Source] | None:
    q, k, v = args["query"], args["key"], args["value"]
    qs, ks, vs = _shape(q), _shape(k), _shape(v)
    if qs is None or ks is None or vs is None or not len(qs) == len(ks) == len(vs) == 4:
        return None
    heads = qs[1]
    if not _static(heads, qs[3], ks[1], vs[1]):
        return None
    if args.get("enable_gqa", False):
        if ks[1] != vs[1] or heads % ks[1] or ks[1] == heads:
            return None
        r = heads // ks[1]
        return _Source(k, r, False), _Source(v, r, False)
    if ks[1] != heads or vs[1] != heads:
        return None
    ksrc, vsrc = _repeat_source(k), _repeat_source(v)
    if ksrc is None or vsrc is None or ksrc.groups != vsrc.groups or ksrc.groups < 2:
        return None
    if heads % ksrc.groups:
        return None
    return ksrc, vsrc


def _foldable(node: Node, mutated: set[Node]) -> tuple[_Source, _Source] | None:
    args = sdpa_args(node)
    if args.get("is_causal", False) or float(args.get("dropout_p", 0.0)) != 0.0:
        return None
    if not _mask_ok(args.get("attn_mask")):
        return None
    found = _sources(node, args)
    if found is None:
        return None
    if {args["query"], args["key"], args["value"], *_path(args["key"]), *_path(args["value"])} & mutated:
        return None  # a write to q, to the repeated copies or to their sources: the fold would read other values
    return found


def _path(node: Any) -> list[Node]:
    """The nodes from a repeated K/V back to its source (the source included)."""
    out: list[Node] = []
    while isinstance(node, Node) and node.op == "call_function" and len(out) < 6:
        out.append(node)
        node = node.args[0] if node.args else None
    if isinstance(node, Node):
        out.append(node)
    return out


def _base(graph: Any, src: _Source) -> Node:
    if src.transposed:
        return graph.call_function(aten.transpose.int, (src.node, 1, 2))
    return src.node


def same_layout(graph: Any, out: Node, like: torch.Tensor | None) -> tuple[Node, list[Node]]:
    """``out`` (contiguous (B, H, N, D)) in the memory order the replaced attention's output had.

    SDPA kernels write their output in the query's layout ((B, N, H, D) memory for the usual transposed q), and the
    graph after it may ``view`` that layout (``out.transpose(1, 2).view(B, N, -1)``): the folded output keeps it.
    """
    if like is None or like.is_contiguous():
        return out, []
    strides = [int(s) if isinstance(s, int) else 0 for s in like.stride()]
    order = sorted(range(4), key=lambda d: -strides[d])  # outermost dim first
    inverse = [order.index(d) for d in range(4)]
    permuted = graph.call_function(aten.permute.default, (out, order))
    dense = graph.call_function(aten.clone.default, (permuted,), {"memory_format": torch.contiguous_format})
    back = graph.call_function(aten.permute.default, (dense, inverse))
    return back, [permuted, dense]


@register_pass("fold_gqa_attention", stage="lower")
def fold_gqa_attention(gm: GraphModule) -> PassResult:
    """No SDPA without causal masking or per-row masks reads K/V repeated over the query heads of a group."""
    mutated = mutated_values(gm)
    graph = gm.graph
    folded = 0
    for node in list(graph.nodes):
        if not _call(node, _SDPA):
            continue
        found = _foldable(node, mutated)
        if found is None:
            continue
        ksrc, vsrc = found
        args = sdpa_args(node)
        q = args["query"]
        heads = _shape(q)[1]  # type: ignore[index]
        r = ksrc.groups
        with graph.inserting_before(node):
            k, v = _base(graph, ksrc), _base(graph, vsrc)
            q_groups = graph.call_function(aten.unflatten.int, (q, 1, [heads // r, r]))  # (B, G, r, N, D)
            q_rows = graph.call_function(aten.flatten.using_ints, (q_groups, 2, 3))  # (B, G, r*N, D)
            kwargs = {"attn_mask": args.get("attn_mask"), "dropout_p": 0.0, "is_causal": False,
                      "scale": args.get("scale")}
            attn = graph.call_function(_SDPA, (q_rows, k, v), kwargs)
            rows = graph.call_function(aten.unflatten.int, (attn, 2, [r, -1]))  # (B, G, r, N, D)
            flat = graph.call_function(aten.flatten.using_ints, (rows, 1, 2))  # (B, H, N, D)
            out, laid = same_layout(graph, flat, tensor_meta(node))
        new = [n for n in (k, v) if n is not ksrc.node and n is not vsrc.node] + [q_groups, q_rows, attn, rows, flat]
        new += [*laid, out] if out is not flat else []
        substitute(gm, node, out, new)
        folded += 1
    if folded:
        graph.eliminate_dead_code(is_impure_node=is_impure)  # the repeats nothing reads any more
        finish(gm)
        log.debug("fold_gqa_attention: %d attention(s) folded", folded)
    return PassResult(gm, bool(folded), folded, f"{folded} GQA attention(s) read K/V once per group")

