"""Normalisation of matmul (+ bias add) with a 2-D weight into ``aten.linear``."""

from __future__ import annotations

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


def _rewrites() -> list[Rewrite]:
    """One pattern family, parametrised by weight layout (w is [N, K] under .t(), or [K, N]) and bias position."""
    out = []
    for transposed in (True, False):
        w_ex = _W if transposed else _W.t().contiguous()

        def mm(x, w, transposed=transposed):  # type: ignore[no-untyped-def]
            return x @ (w.t() if transposed else w)

        def lin_w(w, transposed=transposed):  # type: ignore[no-untyped-def]
            return w if transposed else w.t()

        variants = {
            "matmul+bias": (lambda x, w, b, mm=mm: mm(x, w) + b, True),
            "bias+matmul": (lambda x, w, b, mm=mm: b + mm(x, w), True),
            "matmul": (lambda x, w, mm=mm: mm(x, w), False),
        }
        for name, (pattern, with_bias) in variants.items():
            if with_bias:
                repl = lambda x, w, b, lw=lin_w: F.linear(x, lw(w), b)  # noqa: E731
                args: tuple[torch.Tensor, ...] = (_X, w_ex, _B)
            else:
                repl = lambda x, w, lw=lin_w: F.linear(x, lw(w))  # noqa: E731
                args = (_X, w_ex)
            tag = f"{name}{'' if transposed else ' (w not transposed)'}"
            out.append(Rewrite(tag, pattern, repl, args, _exact(transposed, with_bias)))
    # a linear without bias followed by a bias add
    out.append(Rewrite("linear+bias", lambda x, w, b: F.linear(x, w) + b, lambda x, w, b: F.linear(x, w, b),
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
