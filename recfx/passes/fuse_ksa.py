"""``fuse_ksa``: masked attention whose mask is Kwai Summary Attention's becomes one ``recfx::ksa_attention``."""

from __future__ import annotations

import logging
import operator
from collections import Counter
from collections.abc import Callable

import torch
from torch.fx import Graph, GraphModule, Node

import recfx.ops.ksa  # noqa: F401  (defines recfx::ksa_attention)
from recfx.passes.base import PassResult, register_pass
from recfx.passes.ksa_mask_infer import KSAParams, MaskEvaluator
from recfx.passes.ksa_pattern import VARIANTS, AttentionMatch, find_attentions
from recfx.passes.utils import fill_meta, finish, is_impure, tensor_meta

log = logging.getLogger(__name__)

KSA_OP = torch.ops.recfx.ksa_attention.default
_TRANSPOSE = torch.ops.aten.transpose.int
_PROVENANCE_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node")


def _ksa_nodes_valid(gm: GraphModule) -> list[str]:
    """Every ksa_attention node has valid parameters and (B, L, H, D) / (B, L, Hkv, D) inputs."""
    bad = []
    for n in gm.graph.nodes:
        if n.target is not KSA_OP:
            continue
        q, k, v, chunk, summaries, window, scale = n.args
        metas = [tensor_meta(x) for x in (q, k, v)]
        if any(m is None or m.dim() != 4 for m in metas):
            bad.append(f"{n.name}: q/k/v must be rank-4 tensors")
        if not (isinstance(chunk, int) and chunk >= 1 and isinstance(summaries, int) and summaries >= 1
                and isinstance(window, int) and window >= 0 and isinstance(scale, float)):
            bad.append(f"{n.name}: bad KSA parameters {(chunk, summaries, window, scale)}")
    return bad


def _swaps_1_2(node: Node) -> bool:
    """``node`` is ``transpose(x, 1, 2)`` (either order, negative dims too) of a rank-4 ``x``."""
    if node.op != "call_function" or node.target is not _TRANSPOSE or len(node.args) != 3:
        return False
    return {d % 4 for d in node.args[1:] if isinstance(d, int)} == {1, 2} and _rank(node.args[0]) == 4


def _rank(node: object) -> int | None:
    val = tensor_meta(node) if isinstance(node, Node) else None
    return val.dim() if val is not None else None


def _to_blhd(graph: Graph, node: Node) -> Node:
    """(B, H, L, D) -> (B, L, H, D): the tensor the model transposed, when it did, else a transpose (a view)."""
    if _swaps_1_2(node):
        return node.args[0]  # type: ignore[return-value]
    return graph.call_function(_TRANSPOSE, (node, 1, 2))


def _replace(gm: GraphModule, m: AttentionMatch, p: KSAParams) -> None:
    graph = gm.graph
    provenance = {k: v for k, v in m.output.meta.items() if k in _PROVENANCE_KEYS}
    with graph.inserting_before(m.output):
        q, k, v = (m.q, m.k, m.v) if m.layout == "blhd" else (_to_blhd(graph, x) for x in (m.q, m.k, m.v))
        op = graph.call_function(KSA_OP, (q, k, v, p.chunk, p.summaries, p.window, m.scale))
        out = graph.call_function(operator.getitem, (op, 0))  # (B, L, H, D)
        for node in (op, out):
            node.meta.update(provenance)
        if m.layout == "bhld":
            for user in [u for u in m.output.users if _swaps_1_2(u)]:
                user.replace_all_uses_with(out)  # the model's transpose back to (B, L, H, D)
                graph.erase_node(user)
            if m.output.users:
                out = graph.call_function(_TRANSPOSE, (out, 1, 2))  # (B, H, L, D) for the other users
                out.meta.update(provenance)
    m.output.replace_all_uses_with(out)
    # SDPA is tagged random (its dropout), so dead-code elimination keeps it; the match proved dropout_p == 0
    for node in sorted(m.nodes, key=_position(graph), reverse=True):
        if not node.users:
            graph.erase_node(node)


def _position(graph: Graph) -> Callable[[Node], int]:
    order = {n: i for i, n in enumerate(graph.nodes)}
    return order.__getitem__


@register_pass("fuse_ksa", stage="fuse", postcondition=_ksa_nodes_valid)
def fuse_ksa(gm: GraphModule) -> PassResult:
    """Every softmax attention whose (evaluated) mask is a KSA mask is one recfx::ksa_attention node.

    Attention is matched in its usual spellings (``ksa_pattern.VARIANTS``: spelled out or SDPA, inputs
    (B, L, H, D) or (B, H, L, D), GQA by repeat or ``enable_gqa``); the mask input is evaluated (read
    when constant, run at several lengths when it depends on the sequence length) and compared with the spec's
    mask to infer (k, S, W). Other masks (causal, text-causal full layers, anything else) are left alone.
    """
    evaluator = MaskEvaluator(gm)
    fused: Counter[KSAParams] = Counter()
    kept = 0
    seen: set[torch.fx.Node] = set()  # nodes of attentions already decided (variants overlap: GQA or not)
    for variant in VARIANTS:
        for m in find_attentions(gm, variant):
            if seen.intersection(m.nodes):
                continue
            seen.update(m.nodes)
            params = evaluator.ksa_params(m.mask, m.polarity)
            if params is None:
                kept += 1
                continue
            _replace(gm, m, params)
            fused[params] += 1
    if fused:
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        fill_meta(gm)
        finish(gm)
    detail = "; ".join(f"{c} x KSA(k={p.chunk}, S={p.summaries}, W={p.window})" for p, c in fused.items())
    if kept:
        detail += f"{'; ' if detail else ''}{kept} attention(s) kept (mask is not KSA)"
    log.info("fuse_ksa: %s", detail or "no attention found")
    return PassResult(gm, modified=bool(fused), changed_nodes=sum(fused.values()), detail=detail)
