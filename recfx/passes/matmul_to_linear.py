"""Normalisation of every GEMM with a 2-D right operand into ``aten.linear``.

``x @ w`` / ``x @ w.t()`` (+ a bias add), ``mm``, ``addmm`` (bias of N, no alpha / beta), ``bmm`` against one weight
expanded over the batch, and ``einsum`` equations that are a linear (``"...k,nk->...n"`` or ``"...k,kn->...n"``)
all become ``aten.linear``, so that the FP8 passes (which quantize ``aten.linear`` with a constant weight) and the
backends see one form. Each rewrite is exact: it is applied only where shapes and dtypes prove the same function.
"""

from __future__ import annotations

import functools
import logging
import re

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.rewrite import Match, Rewrite
from recfx.passes.utils import fill_meta, finish, is_impure, tensor_meta

log = logging.getLogger(__name__)

_X, _W, _B = torch.empty(3, 4), torch.empty(5, 4), torch.empty(5)


def _exact(transposed: bool, with_bias: bool):  # type: ignore[no-untyped-def]
    """The linear form computes the same function: 2-D weight, 1-D bias of N, same dtype, x of rank >= 2."""

    def check(m: Match) -> bool:
        x, w = tensor_meta(m.inputs["x"]), tensor_meta(m.inputs["w"])
        b = tensor_meta(m.inputs["b"]) if with_bias else None
        if x is None or w is None or w.dim() != 2 or x.dim() < 2:
            return False
        n = w.shape[0] if transposed else w.shape[1]
        if with_bias and (b is None or b.dim() != 1 or b.shape[0] != n or b.dtype != x.dtype):
            return False
        return x.dtype == w.dtype

    return check


def _w(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """The weight as the matmul sees it: stored [N, K] and transposed, or stored [K, N]."""
    return w.t() if transposed else w


def _matmul_bias(x, w, b, *, transposed):  # type: ignore[no-untyped-def]
    return x @ _w(w, transposed) + b


def _bias_matmul(x, w, b, *, transposed):  # type: ignore[no-untyped-def]
    return b + x @ _w(w, transposed)


def _matmul(x, w, *, transposed):  # type: ignore[no-untyped-def]
    return x @ _w(w, transposed)


def _linear_bias(x, w, b, *, transposed):  # type: ignore[no-untyped-def]
    return F.linear(x, w.t() if not transposed else w, b)


def _linear(x, w, *, transposed):  # type: ignore[no-untyped-def]
    return F.linear(x, w.t() if not transposed else w)


def _linear_then_add(x, w, b):  # type: ignore[no-untyped-def]
    return F.linear(x, w) + b


def _mm(x, w, *, transposed):  # type: ignore[no-untyped-def]
    return torch.mm(x, _w(w, transposed))


def _addmm(x, w, b, *, transposed):  # type: ignore[no-untyped-def]
    return torch.addmm(b, x, _w(w, transposed))


def _rewrites() -> list[Rewrite]:
    """One pattern family parametrised by weight layout ([N, K] under .t(), or [K, N]) and bias position.

    Biased forms come first so that a bare matmul never splits a matmul + bias pair.
    """
    out = []
    for transposed in (True, False):
        w = _W if transposed else _W.t().contiguous()
        layout = "" if transposed else " (w stored [K, N])"
        for pattern, with_bias in ((_matmul_bias, True), (_bias_matmul, True), (_addmm, True), (_matmul, False),
                                   (_mm, False)):
            repl = _linear_bias if with_bias else _linear
            args = (_X, w, _B) if with_bias else (_X, w)
            out.append(Rewrite(f"{pattern.__name__.strip('_')}{layout}",
                               functools.partial(pattern, transposed=transposed),
                               functools.partial(repl, transposed=transposed), args, _exact(transposed, with_bias)))
    out.append(Rewrite("linear+bias", _linear_then_add, functools.partial(_linear_bias, transposed=True),
                       (_X, _W, _B), _exact(True, True)))
    return out


_REWRITES: list[Rewrite] | None = None


@register_pass("matmul_to_linear", stage="canonicalize")
def matmul_to_linear(gm: GraphModule) -> PassResult:
    """Every matmul of an activation with a 2-D weight (plus an exact bias add) is one aten.linear."""
    global _REWRITES
    if _REWRITES is None:
        _REWRITES = _rewrites()
    total = 0
    for rw in _REWRITES:
        n = rw.apply(gm)
        if n:
            log.debug("matmul_to_linear: %d x %s", n, rw.name)
        total += n
    shaped = 0
    for node in list(gm.graph.nodes):
        weight = _shared_bmm_weight(node) if node.target is aten.bmm.default else (
            _einsum_weight(node) if node.target is aten.einsum.default else None)
        if weight is not None:
            _to_linear(gm, node, weight)
            shaped += 1
    if shaped:
        log.debug("matmul_to_linear: %d x bmm / einsum", shaped)
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        fill_meta(gm)
    total += shaped
    if total:
        finish(gm)
    return PassResult(gm, modified=total > 0, changed_nodes=total)


aten = torch.ops.aten
#: "x_labels,w_labels->out_labels" with single-letter labels and an optional leading "..." on x and the output
_EINSUM = re.compile(r"^(\.\.\.)?([a-zA-Z]*),([a-zA-Z]{2})->(\.\.\.)?([a-zA-Z]*)$")


def _to_linear(gm: GraphModule, node: Node, weight: tuple[Node, Node, bool]) -> None:
    """Replace ``node`` by ``linear(x, w)`` (``w.t()`` when the weight is stored [K, N])."""
    x, w, stored_kn = weight
    with gm.graph.inserting_before(node):
        if stored_kn:
            w = gm.graph.call_function(aten.t.default, (w,))
        linear = gm.graph.call_function(aten.linear.default, (x, w))
    linear.meta.update({k: v for k, v in node.meta.items() if k in ("val", "nn_module_stack", "stack_trace",
                                                                     "source_fn_stack", "from_node")})
    node.replace_all_uses_with(linear)


def _same_dtype(x: Node, w: Node) -> bool:
    xv, wv = tensor_meta(x), tensor_meta(w)
    return xv is not None and wv is not None and xv.dtype == wv.dtype and xv.dtype.is_floating_point


def _shared_bmm_weight(node: Node) -> tuple[Node, Node, bool] | None:
    """``bmm(x, w.unsqueeze(0).expand(B, K, N))``: every batch row times one [K, N] weight is a linear."""
    x, rhs = node.args
    if not (isinstance(x, Node) and isinstance(rhs, Node) and rhs.target is aten.expand.default):
        return None
    source = rhs.args[0]
    if not (isinstance(source, Node) and source.target is aten.unsqueeze.default and source.args[1] == 0):
        return None
    w = source.args[0]
    wv, rv = tensor_meta(w) if isinstance(w, Node) else None, tensor_meta(rhs)
    if wv is None or rv is None or wv.dim() != 2 or rv.dim() != 3 or tuple(rv.shape[1:]) != tuple(wv.shape):
        return None  # the expand may only broadcast the new batch dim
    assert isinstance(w, Node)
    return (x, w, True) if _same_dtype(x, w) else None


def _einsum_weight(node: Node) -> tuple[Node, Node, bool] | None:
    """``einsum("...k,nk->...n", x, w)`` (or ``kn``): x's last label contracted with w, the rest kept in order."""
    equation, operands = node.args[0], node.args[1]
    if not isinstance(equation, str) or not isinstance(operands, (list, tuple)) or len(operands) != 2:
        return None
    found = _EINSUM.match(equation.replace(" ", ""))
    x, w = operands
    if found is None or not isinstance(x, Node) or not isinstance(w, Node):
        return None
    x_ellipsis, x_labels, w_labels, out_ellipsis, out_labels = found.groups()
    if bool(x_ellipsis) != bool(out_ellipsis) or not x_labels or len(set(x_labels)) != len(x_labels):
        return None
    k = x_labels[-1]
    if k not in w_labels or w_labels[0] == w_labels[1]:
        return None
    n = w_labels.replace(k, "")
    if n in x_labels or out_labels != x_labels[:-1] + n:
        return None
    xv, wv = tensor_meta(x), tensor_meta(w)
    if xv is None or wv is None or wv.dim() != 2 or (not x_ellipsis and xv.dim() != len(x_labels)):
        return None
    return (x, w, w_labels == k + n) if _same_dtype(x, w) else None
