"""The masked-attention pattern ``fuse_ksa`` looks for, as plain PyTorch parametrised by its spellings.

One pattern function, traced with torch.export like every recfx rewrite, in the variants models write: spelled out
(scores by matmul, scale as a multiply of the scores, a divide, or a multiply of q; the mask applied by
``masked_fill``, ``where`` (either polarity) or added) or as ``F.scaled_dot_product_attention`` with a boolean or
additive ``attn_mask`` (with or without ``scale``, with or without ``enable_gqa``); GQA by ``repeat_kv``
(unsqueeze, expand, reshape) or not; inputs (B, L, H, D) transposed inside the pattern, as recfx's models write it,
or already (B, H, L, D), as transformers and most SDPA code write it (k/v then repeated on dim 1). Literal
arguments are matched loosely by fx's matcher (shapes differ per model) and checked here: dims must agree, scale
and fill are read out, SDPA must have no dropout and no ``is_causal``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import Graph, GraphModule, Node
from torch.fx.passes.utils.matcher_utils import InternalMatch, SubgraphMatcher

from recfx.passes.rewrite import _trace
from recfx.passes.utils import fetch_attr, same_shape, tensor_meta

#: a fill value at or below this is -inf for the softmax (exp underflows to exactly 0 in every float dtype)
NEG_INF_THRESHOLD = -1e4
_PATTERN_SCALE = 0.5
_MASK_POLARITY = {"masked_fill": "block", "where": "allow", "where_inverted": "block", "add": "additive"}
_SDPA = torch.ops.aten.scaled_dot_product_attention.default
_TRANSPOSE = torch.ops.aten.transpose.int
#: where the head dim is in the pattern's inputs, by layout
_HEAD_DIM = {"blhd": 2, "bhld": 1}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One spelling of masked softmax attention.

    ``scale`` and ``mask`` are both ``"sdpa"`` for ``F.scaled_dot_product_attention`` (its scale argument or default
    read from the node; a bool ``attn_mask`` is "allowed", a float one additive, told apart by its dtype).
    """

    scale: str  # "mul" (scores * s), "div" (scores / d), "q_mul" ((q * s) @ k^T), "sdpa"
    mask: str  # "masked_fill" (mask = blocked), "where" (mask = allowed), "where_inverted", "add" (0 / -inf), "sdpa"
    gqa: bool  # k/v repeated to the query heads inside the pattern (SDPA's enable_gqa is read from the node)
    layout: str = "blhd"  # the inputs: (B, L, H, D), transposed inside the pattern, or "bhld": (B, H, L, D) already

    @property
    def sdpa(self) -> bool:
        return self.mask == "sdpa"

    def polarity(self, mask_dtype: torch.dtype) -> str:
        if self.sdpa:
            return "allow" if mask_dtype == torch.bool else "additive"
        return _MASK_POLARITY[self.mask]


_SPELLED = tuple(itertools.product(("mul", "div", "q_mul"), ("masked_fill", "where", "where_inverted", "add")))
#: tried in this order; a later variant never takes nodes an earlier one matched. Spelled out with (B, L, H, D)
#: inputs first (repeat_kv before the transposes, recfx's models), then everything on (B, H, L, D) inputs
#: (transformers' repeat_kv after the transposes; without GQA this also covers the first form's attentions).
VARIANTS: tuple[Variant, ...] = (
    *(Variant(scale, mask, gqa) for gqa, (scale, mask) in itertools.product((True, False), _SPELLED)),
    *(Variant("sdpa", "sdpa", gqa, "bhld") for gqa in (True, False)),
    *(Variant(scale, mask, gqa, "bhld") for gqa, (scale, mask) in itertools.product((True, False), _SPELLED)),
)


def _repeat_kv(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Repeat the kv heads (dim ``head_dim``) of a rank-4 tensor to ``heads``, each one ``heads // Hkv`` times."""
    shape = list(x.shape)
    groups = heads // shape[head_dim]
    expanded = [*shape[: head_dim + 1], groups, *shape[head_dim + 1:]]
    shape[head_dim] *= groups
    return x.unsqueeze(head_dim + 1).expand(expanded).reshape(shape)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
              variant: Variant = VARIANTS[0]) -> torch.Tensor:
    """The pattern: masked softmax attention over q, k/v laid out as ``variant.layout``; the output is laid out as q.

    ``"blhd"``: q (B, L, H, D), k/v (B, L, Hkv, D) -> (B, L, H, D); ``"bhld"``: q (B, H, L, D), k/v (B, Hkv, L, D)
    -> (B, H, L, D).
    """
    head_dim = _HEAD_DIM[variant.layout]
    if variant.gqa:
        k, v = _repeat_kv(k, q.shape[head_dim], head_dim), _repeat_kv(v, q.shape[head_dim], head_dim)
    if variant.layout == "blhd":
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
    if variant.sdpa:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2) if variant.layout == "blhd" else out
    if variant.scale == "q_mul":
        scores = (q * _PATTERN_SCALE) @ k.transpose(-2, -1)
    elif variant.scale == "mul":
        scores = (q @ k.transpose(-2, -1)) * _PATTERN_SCALE
    else:
        scores = (q @ k.transpose(-2, -1)) / (1 / _PATTERN_SCALE)
    if variant.mask == "masked_fill":
        scores = scores.masked_fill(mask, float("-inf"))
    elif variant.mask == "where":
        scores = torch.where(mask, scores, float("-inf"))
    elif variant.mask == "where_inverted":
        scores = torch.where(mask, float("-inf"), scores)
    else:
        scores = scores + mask
    out = torch.softmax(scores, dim=-1) @ v  # (B, H, L, D)
    return out.transpose(1, 2) if variant.layout == "blhd" else out


@dataclasses.dataclass(frozen=True)
class AttentionMatch:
    """A matched attention: its inputs (laid out as ``layout``), the scale and mask use read from the graph, and its
    output node (laid out as q)."""

    q: Node
    k: Node
    v: Node
    mask: Node
    polarity: str
    scale: float
    output: Node
    nodes: tuple[Node, ...]
    layout: str = "blhd"


@functools.cache
def _pattern(variant: Variant) -> Graph:
    q = torch.empty(2, 8, 4, 16) if variant.layout == "blhd" else torch.empty(2, 4, 8, 16)
    kv = torch.empty(2, 8, 2 if variant.gqa else 4, 16) if variant.layout == "blhd" else torch.empty(
        2, 2 if variant.gqa else 4, 8, 16)
    mask = torch.empty(8, 8) if variant.mask == "add" else torch.empty(8, 8, dtype=torch.bool)
    graph, _ = _trace(functools.partial(attention, variant=variant), (q, kv, kv, mask))
    return graph


def find_attentions(gm: GraphModule, variant: Variant) -> list[AttentionMatch]:
    """Every occurrence of ``variant`` in ``gm`` whose literals and shapes make it the attention it looks like."""
    pattern = _pattern(variant)
    matcher = SubgraphMatcher(pattern, match_output=False, match_placeholder=False,
                              remove_overlapping_matches=True, ignore_literals=True)
    found = []
    for im in matcher.match(gm.graph):
        m = _checked(gm, im, variant)
        if m is not None:
            found.append(m)
    return found


def _checked(gm: GraphModule, im: InternalMatch, variant: Variant) -> AttentionMatch | None:
    if len(im.returning_nodes) != 1 or len(im.placeholder_nodes) != 4:
        return None
    if not all(isinstance(n, Node) for n in im.placeholder_nodes):
        return None  # with literals ignored, SDPA's attn_mask=None "matches" the mask input
    if not all(_literals_agree(p, n) for p, n in im.nodes_map.items() if p.op == "call_function"):
        return None
    q, k, v, mask = im.placeholder_nodes
    output = im.returning_nodes[0]
    qv, kv, vv = tensor_meta(q), tensor_meta(k), tensor_meta(v)
    if qv is None or kv is None or vv is None or qv.dim() != 4 or kv.dim() != 4 or not same_shape(k, v):
        return None
    if qv.dtype != kv.dtype or qv.dtype != vv.dtype or not qv.dtype.is_floating_point:
        return None
    heads = _HEAD_DIM[variant.layout]
    length = qv.shape[3 - heads]  # the other of dims 1 and 2
    if not same_shape(output, q) or not all(_same(qv.shape[d], kv.shape[d]) for d in (0, 3 - heads, 3)):
        return None  # one batch, one sequence (self-attention), one head dim
    sdpa = _sdpa_args(im) if variant.sdpa else {}
    grouped = variant.gqa or sdpa.get("enable_gqa", False)
    if not _heads_ok(qv.shape[heads], kv.shape[heads], bool(grouped)):
        return None
    mask = _broadcast_source(mask)
    mv = tensor_meta(mask)
    if mv is None or mv.dim() < 2 or not all(_same(d, length) for d in mv.shape[-2:]):
        return None
    if any(not _same(d, 1) for d in mv.shape[:-2]) and mask.op != "get_attr":
        return None  # per-batch or per-head masks are not one KSA mask (a constant is read, its rows compared)
    scale = _sdpa_scale(sdpa, qv) if variant.sdpa else _read_scale(gm, im, variant)
    fill_ok = _sdpa_ok(sdpa) if variant.sdpa else _fill_ok(im, variant)
    if scale is None or not fill_ok:
        return None
    nodes = tuple(n for p, n in im.nodes_map.items() if p.op == "call_function")
    return AttentionMatch(q, k, v, mask, variant.polarity(mv.dtype), scale, output, nodes, variant.layout)


def _heads_ok(heads: Any, kv_heads: Any, grouped: bool) -> bool:
    if not grouped:
        return _same(heads, kv_heads)
    return isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads >= 1 and heads % kv_heads == 0


def _broadcast_source(mask: Node) -> Node:
    """The mask before an ``expand`` over its leading (batch / head) dims: the same (L, L) mask for every row."""
    while mask.op == "call_function" and mask.target is torch.ops.aten.expand.default:
        source = mask.args[0]
        if not isinstance(source, Node):
            break
        sv, mv = tensor_meta(source), tensor_meta(mask)
        if sv is None or mv is None or sv.dim() != mv.dim() or sv.dim() < 2:
            break
        if not all(_same(a, b) for a, b in zip(sv.shape[-2:], mv.shape[-2:])):
            break
        mask = source
    return mask


def _sdpa_args(im: InternalMatch) -> dict[str, Any]:
    """The SDPA node's arguments by name, defaults filled in from the op's schema."""
    (node,) = _mapped(im, _SDPA)
    named: dict[str, Any] = {}
    for i, arg in enumerate(_SDPA._schema.arguments):
        if arg.name in node.kwargs:
            named[arg.name] = node.kwargs[arg.name]
        elif not arg.kwarg_only and i < len(node.args):
            named[arg.name] = node.args[i]
        else:
            named[arg.name] = arg.default_value
    return named


def _sdpa_ok(args: dict[str, Any]) -> bool:
    """No dropout, no built-in causal mask (the mask is the only one), a mask that is a graph value."""
    return (args["dropout_p"] == 0 and args["is_causal"] is False and isinstance(args["attn_mask"], Node)
            and isinstance(args.get("enable_gqa", False), bool))


def _sdpa_scale(args: dict[str, Any], q: torch.Tensor) -> float | None:
    scale = args.get("scale")
    if scale is None:  # SDPA's default, computed as SDPA computes it
        head_dim = q.shape[-1]
        return 1.0 / math.sqrt(head_dim) if isinstance(head_dim, int) else None
    return float(scale) if isinstance(scale, (int, float)) and scale != 0 else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return bool(torch.fx.experimental.symbolic_shapes.statically_known_true(a == b))


def _rank(node: Node) -> int | None:
    val = tensor_meta(node)
    return val.dim() if val is not None else None


def _literals_agree(pattern: Node, node: Node) -> bool:
    """Same op, same non-shape literals (dims compared modulo rank); sizes, scale and fill are checked elsewhere."""
    if pattern.target is _SDPA:
        return node.target is _SDPA  # its arguments are read by name in _sdpa_args
    if pattern.target != node.target or len(pattern.args) != len(node.args):
        return False
    rank = _rank(node) if pattern.target is torch.ops.aten.unsqueeze.default else (
        _rank(node.args[0]) if node.args and isinstance(node.args[0], Node) else None)
    for pa, na in itertools.chain(zip(pattern.args, node.args),
                                  ((pattern.kwargs[k], node.kwargs.get(k)) for k in pattern.kwargs)):
        if isinstance(pa, (Node, list, tuple, float)):
            continue
        if isinstance(pa, int) and not isinstance(pa, bool) and isinstance(na, int) and rank:
            if pa % rank != na % rank:
                return False
        elif pa != na:
            return False
    return set(node.kwargs) <= set(pattern.kwargs)


def _scalar(gm: GraphModule, arg: Any) -> float | None:
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return float(arg)
    if isinstance(arg, Node) and arg.op == "get_attr":
        value = fetch_attr(gm, str(arg.target))
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.device.type != "meta":
            return float(value)
    return None


def _mapped(im: InternalMatch, target: Any) -> list[Node]:
    return [n for p, n in im.nodes_map.items() if p.op == "call_function" and p.target == target]


def _read_scale(gm: GraphModule, im: InternalMatch, variant: Variant) -> float | None:
    target = torch.ops.aten.div.Tensor if variant.scale == "div" else torch.ops.aten.mul.Tensor
    nodes = _mapped(im, target)
    if len(nodes) != 1:
        return None
    value = _scalar(gm, nodes[0].args[1])
    if value is None or value == 0:
        return None
    return 1 / value if variant.scale == "div" else value


def _fill_ok(im: InternalMatch, variant: Variant) -> bool:
    if variant.mask == "add":
        return True  # the mask values themselves are checked when it is evaluated
    fills = [n for p, n in im.nodes_map.items() if p.op == "call_function"
             and p.target in (torch.ops.aten.masked_fill.Scalar, torch.ops.aten.where.ScalarOther,
                              torch.ops.aten.where.ScalarSelf)]
    if len(fills) != 1:
        return False
    node = fills[0]
    value = node.args[2] if variant.mask in ("masked_fill", "where") else node.args[1]
    return isinstance(value, (int, float)) and value <= NEG_INF_THRESHOLD
