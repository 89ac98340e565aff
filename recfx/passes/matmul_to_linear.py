"""Normalisation of matmul (+ bias add) with a 2-D weight into ``aten.linear``."""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch.fx import GraphModule

from recfx.passes.base import PassResult, register_pass
from recfx.passes.rewrite import Match, Rewrite
from recfx.passes.utils import finish, tensor_meta

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


def _rewrites() -> list[Rewrite]:
    """One pattern family parametrised by weight layout ([N, K] under .t(), or [K, N]) and bias position.

    Biased forms come first so that a bare matmul never splits a matmul + bias pair.
    """
    out = []
    for transposed in (True, False):
        w = _W if transposed else _W.t().contiguous()
        layout = "" if transposed else " (w stored [K, N])"
        for pattern, with_bias in ((_matmul_bias, True), (_bias_matmul, True), (_matmul, False)):
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
    if total:
        finish(gm)
    return PassResult(gm, modified=total > 0, changed_nodes=total)
