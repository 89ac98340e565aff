"""The masked-attention pattern ``fuse_ksa`` looks for, as plain PyTorch parametrised by its spellings.

One pattern function, traced with torch.export like every recfx rewrite, in the variants models write: scale as a
multiply of the scores, a divide, or a multiply of q; the mask applied by ``masked_fill``, ``where`` (either
polarity) or added; GQA by ``repeat_kv`` (unsqueeze, expand, reshape) or not. Literal arguments are matched
loosely by fx's matcher (shapes differ per model) and checked here: dims must agree, scale and fill are read out.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.passes.utils.matcher_utils import InternalMatch, SubgraphMatcher

from recfx.passes.rewrite import _trace
from recfx.passes.utils import fetch_attr, same_shape, tensor_meta

#: a fill value at or below this is -inf for the softmax (exp underflows to exactly 0 in every float dtype)
NEG_INF_THRESHOLD = -1e4
_PATTERN_SCALE = 0.5
_MASK_POLARITY = {"masked_fill": "block", "where": "allow", "where_inverted": "block", "add": "additive"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One spelling of masked softmax attention on (B, L, H, D) inputs."""

    scale: str  # "mul" (scores * s), "div" (scores / d), "q_mul" ((q * s) @ k^T)
    mask: str  # "masked_fill" (mask = blocked), "where" (mask = allowed), "where_inverted", "add" (0 / -inf)
    gqa: bool  # k/v repeated to the query heads inside the pattern

    @property
    def polarity(self) -> str:
        return _MASK_POLARITY[self.mask]


VARIANTS: tuple[Variant, ...] = tuple(
    Variant(scale, mask, gqa) for gqa, scale, mask in itertools.product(
        (True, False), ("mul", "div", "q_mul"), ("masked_fill", "where", "where_inverted", "add")))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
              variant: Variant = VARIANTS[0]) -> torch.Tensor:
    """The pattern: masked softmax attention, q (B, L, H, D), k/v (B, L, Hkv, D) -> (B, L, H, D)."""
    if variant.gqa:
        b, t, h, d = k.shape
        groups = q.shape[2] // h
        k = k.unsqueeze(3).expand(b, t, h, groups, d).reshape(b, t, h * groups, d)
        v = v.unsqueeze(3).expand(b, t, h, groups, d).reshape(b, t, h * groups, d)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
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
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2)


@dataclasses.dataclass(frozen=True)
class AttentionMatch:
    """A matched attention: its inputs, the scale and mask use read from the graph, and its output node."""

    q: Node
    k: Node
    v: Node
    mask: Node
    polarity: str
    scale: float
    output: Node
    nodes: tuple[Node, ...]


@functools.cache
def _pattern(variant: Variant) -> Graph:
    q = torch.empty(2, 8, 4, 16)
    kv = torch.empty(2, 8, 2 if variant.gqa else 4, 16)
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
    if not all(_literals_agree(p, n) for p, n in im.nodes_map.items() if p.op == "call_function"):
        return None
    q, k, v, mask = im.placeholder_nodes
    output = im.returning_nodes[0]
    qv, kv, vv = tensor_meta(q), tensor_meta(k), tensor_meta(v)
    if qv is None or kv is None or vv is None or qv.dim() != 4 or kv.dim() != 4 or not same_shape(k, v):
        return None
    if qv.dtype != kv.dtype or qv.dtype != vv.dtype or not qv.dtype.is_floating_point:
        return None
    if not same_shape(output, q) or not (variant.gqa or same_shape(k, q)):
        return None
    mv = tensor_meta(mask)
    length = qv.shape[1]
    if mv is None or mv.dim() < 2 or not all(_same(d, length) for d in mv.shape[-2:]):
        return None
    if any(not _same(d, 1) for d in mv.shape[:-2]):
        return None  # per-batch or per-head masks are not one KSA mask
    scale = _read_scale(gm, im, variant)
    fill_ok = _fill_ok(im, variant)
    if scale is None or not fill_ok:
        return None
    nodes = tuple(n for p, n in im.nodes_map.items() if p.op == "call_function")
    return AttentionMatch(q, k, v, mask, variant.polarity, scale, output, nodes)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return bool(torch.fx.experimental.symbolic_shapes.statically_known_true(a == b))


def _rank(node: Node) -> int | None:
    val = tensor_meta(node)
    return val.dim() if val is not None else None


def _literals_agree(pattern: Node, node: Node) -> bool:
    """Same op, same non-shape literals (dims compared modulo rank); sizes, scale and fill are checked elsewhere."""
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
