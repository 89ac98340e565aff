"""Is an attention mask in a graph Kwai Summary Attention's, and with which (k, S, W)? Decided by evaluation.

A mask arrives either as a constant (static shapes: constant folding made it a ``_folded_*`` buffer) or as a
subgraph of the sequence length (dynamic shapes: ``arange`` and friends). Either way it is *evaluated* — a constant
is read, a subgraph is run at several concrete lengths — and compared with ``recfx.ops.ksa_layout.ksa_mask``. So
any spelling of the mask (other ops, other order, ``where`` vs ``&``) is recognised, and anything else is not.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, cast

import sympy
import torch
from torch.fx import GraphModule, Node

from recfx.ops.ksa_layout import ksa_mask, ksa_visibility
from recfx.passes.graph_view import ancestors_within
from recfx.passes.ksa_pattern import NEG_INF_THRESHOLD
from recfx.passes.utils import fetch_attr, is_impure, tensor_meta

log = logging.getLogger(__name__)

#: the longest sequence a mask subgraph is evaluated at (its (L, L) intermediates stay under ~100 MB)
MAX_EVAL_LENGTH = 2600
#: evaluations needed before a dynamic mask is trusted
MIN_EVALUATIONS = 3


@dataclasses.dataclass(frozen=True)
class KSAParams:
    """KSA mask parameters: chunk k, summaries S, window W (chunks)."""

    chunk: int
    summaries: int
    window: int


@dataclasses.dataclass(frozen=True)
class Inferred:
    """Parameters matching one concrete mask; ``exact`` is False when every window >= ``params.window`` matches."""

    params: KSAParams
    exact: bool


def infer_ksa_params(allowed: torch.Tensor) -> Inferred | None:
    """(k, S, W) such that ``allowed`` (L, L) bool equals ``ksa_mask(L, k, S, W)``, or None.

    The first row with a hole below the diagonal is the first text row of chunk 1, so it gives the block k + S;
    each split of the block into (k, S) is tried, the window read off the last text row, and the whole mask
    compared. Masks of a single chunk (plain causal) are ambiguous and give None.
    """
    if allowed.dim() != 2 or allowed.shape[0] != allowed.shape[1] or allowed.dtype != torch.bool:
        return None
    allowed = allowed.cpu()  # a folded constant lives where the model does (a CUDA graph's mask is on the GPU)
    length = allowed.shape[0]
    if torch.triu(allowed, 1).any() or not allowed.diagonal().all():
        return None
    holes = torch.tril(torch.ones_like(allowed)) & ~allowed
    rows = torch.nonzero(holes.any(1))
    if rows.numel() == 0:
        return None
    block = int(rows[0, 0])
    pos = torch.arange(length)
    for summaries in range(1, block):
        chunk = block - summaries
        text = pos % block < chunk
        last = int(pos[text][-1])
        visible = torch.nonzero(allowed[last] & text)[:, 0]
        if visible.numel() == 0:
            continue
        chunks_back = last // block - int(visible[0]) // block
        exact = int(visible[0]) // block > 0
        params = KSAParams(chunk, summaries, chunks_back)
        tail = pos[-2 * block:]  # a cheap look at the last rows before the whole comparison
        if not torch.equal(allowed[tail], ksa_visibility(tail[:, None], pos[None, :], chunk, summaries, chunks_back)):
            continue
        if torch.equal(allowed, ksa_mask(length, chunk, summaries, params.window)):
            return Inferred(params, exact)
    return None


def allowed_from(value: torch.Tensor, polarity: str) -> torch.Tensor | None:
    """The (L, L) bool "may attend" matrix from a mask value used as ``polarity``, or None if it is not one.

    Leading dims (a batch-expanded (B, 1, L, L) mask folded into a constant) must all hold the same (L, L) mask.
    polarity: ``"allow"`` (True = attend, e.g. ``where(mask, s, -inf)``), ``"block"`` (True = masked,
    ``masked_fill(mask, -inf)``), ``"additive"`` (0 = attend, -inf or at most ``NEG_INF_THRESHOLD`` = masked).
    """
    while value.dim() > 2:  # leading (batch, head) dims: one mask for all of them, or none
        if not bool((value == value[:1]).all()):
            return None
        value = value[0]
    if value.dim() != 2:
        return None
    if polarity == "additive":  # 0 = attend; -inf or a huge negative (finfo.min) = masked, as fill values are
        if value.dtype == torch.bool or not torch.all((value == 0) | (value <= NEG_INF_THRESHOLD)):
            return None
        return value == 0
    if value.dtype != torch.bool:
        return None
    return value if polarity == "allow" else ~value


class MaskEvaluator:
    """Evaluates mask nodes of one graph (constants read, length-dependent subgraphs run), with a cache."""

    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self._cache: dict[tuple[str, str], KSAParams | None] = {}

    def ksa_params(self, node: Node, polarity: str) -> KSAParams | None:
        """The KSA parameters of the mask computed by ``node`` (used as ``polarity``), or None if it is not KSA."""
        key = (node.name, polarity)
        if key not in self._cache:
            self._cache[key] = self._infer(node, polarity)
        return self._cache[key]

    def _infer(self, node: Node, polarity: str) -> KSAParams | None:
        if node.op == "get_attr":
            value = fetch_attr(self.gm, str(node.target))
            if not isinstance(value, torch.Tensor) or value.device.type == "meta":
                log.debug("fuse_ksa: mask %s is not a readable constant", node.name)
                return None
            allowed = allowed_from(value, polarity)
            found = infer_ksa_params(allowed) if allowed is not None else None
            return found.params if found is not None else None
        return self._infer_dynamic(node, polarity)

    def _infer_dynamic(self, node: Node, polarity: str) -> KSAParams | None:
        val = tensor_meta(node)
        if val is None or val.dim() < 2:
            return None
        dims = [cast(torch.SymInt, d) for d in val.shape[-2:] if isinstance(d, torch.SymInt)]
        symbols = sorted({s for d in dims for s in d.node.expr.free_symbols}, key=str)
        if not symbols:
            return None  # a static mask that was not folded: nothing to vary
        length = cast(torch.SymInt, val.shape[-1])
        shape_env = length.node.shape_env
        seen: list[torch.Tensor] = []
        exact: KSAParams | None = None
        for value in _trial_values(shape_env, symbols, length.node.expr):
            mask = self._evaluate(node, dict.fromkeys(symbols, value), shape_env)
            allowed = allowed_from(mask, polarity) if mask is not None else None
            if allowed is None:
                return None
            here = infer_ksa_params(allowed)
            if here is None:
                if torch.equal(allowed, torch.ones_like(allowed).tril()):
                    continue  # at most one block at this length: plain causal, nothing to tell yet
                return None
            seen.append(allowed)
            if here.exact:
                exact = here.params
            if exact is not None and len(seen) >= MIN_EVALUATIONS:
                break
        if exact is None:
            log.debug("fuse_ksa: mask %s: window not determined within %d positions", node.name, MAX_EVAL_LENGTH)
            return None
        if not all(torch.equal(a, ksa_mask(a.shape[0], exact.chunk, exact.summaries, exact.window)) for a in seen):
            return None  # one set of parameters must explain every length
        return exact

    def _evaluate(self, node: Node, values: dict[sympy.Symbol, int], shape_env: Any) -> torch.Tensor | None:
        """Run the subgraph computing ``node`` with the symbols set to ``values`` (placeholders: shapes only)."""
        needed = ancestors_within(self.gm, node.name) | {node.name}
        env: dict[Node, Any] = {}
        backed = getattr(shape_env, "backed_var_to_val", None)  # torch >= 2.12 renamed var_to_val
        hints = {s: int(v) for s, v in (backed if backed is not None else shape_env.var_to_val).items()}
        hints.update(values)
        for n in self.gm.graph.nodes:
            if n.name not in needed:
                continue
            if n.op == "placeholder":
                if any(u.name in needed and u.target is not torch.ops.aten.sym_size.int for u in n.users):
                    return None  # the mask reads input data, not only its shape
                meta = tensor_meta(n)
                if meta is None:
                    return None
                shape = [int(sympy.sympify(d.node.expr if isinstance(d, torch.SymInt) else d).subs(hints))
                         for d in meta.shape]
                env[n] = torch.zeros(shape, dtype=meta.dtype)
            elif n.op == "get_attr":
                value = fetch_attr(self.gm, str(n.target))
                env[n] = value.cpu() if isinstance(value, torch.Tensor) else value
            elif n.op == "call_function" and not (is_impure(n) and n.target is not torch.ops.aten.sym_size.int):
                args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), lambda a: env[a])
                kwargs = dict(kwargs) | ({"device": "cpu"} if "device" in kwargs else {})
                with torch.no_grad():
                    env[n] = n.target(*args, **kwargs)
            else:
                return None
        out = env[node]
        return out if isinstance(out, torch.Tensor) else None


def _trial_values(shape_env: Any, symbols: list[sympy.Symbol], length_expr: sympy.Expr) -> list[int]:
    """Symbol values to evaluate a mask at: the smallest allowed ones, then doubling up to MAX_EVAL_LENGTH."""
    ranges = [shape_env.var_to_range.get(s) for s in symbols]
    lower = max([2] + [int(r.lower) for r in ranges if r is not None and r.lower.is_finite])
    upper = min([10**9] + [int(r.upper) for r in ranges if r is not None and r.upper.is_finite])
    values, v = [], lower
    while v <= upper:
        length = int(length_expr.subs(dict.fromkeys(symbols, v)))
        if length > MAX_EVAL_LENGTH:
            break
        values.append(v)
        v = v + 1 if len(values) < MIN_EVALUATIONS else v * 2
    return values
