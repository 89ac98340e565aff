"""Row-wise FP8 quantization written in plain aten ops, exactly equal to ``recfx::quantize_fp8_per_token``.

The reference ops (``recfx.ops.fp8``) round the exact quotient ``x / scale`` once, in float64. A fused GPU kernel
wants float32 arithmetic and ops that Inductor can fuse into the kernel producing ``x``. A float32 division followed
by a cast to E4M3 rounds twice and misses the reference on about one element in a thousand for bf16 inputs (their
short mantissas make float32 quotients land on E4M3 midpoints). This recipe removes the double rounding with
*round to odd*: after the float32 division ``r = x / s``, the residual ``x - r * s`` (exact in float64) says
whether ``r`` is exact and on which side the true quotient lies; an inexact ``r`` with an even last bit moves one
float32 step toward the true quotient. A quotient rounded to odd on 24 bits rounds to the 4 bits of E4M3 exactly as
the true quotient does, so ``q`` equals the reference bit for bit, and so does the scale (the same float64 division
of the float32 amax, rounded once to float32). The residual test also holds for a division that is only faithful
(within one unit in the last place), as a GPU's may be.

Every function takes ``call(op, *args, **kwargs)``, which either runs the op (:data:`EAGER`) or records it as a graph
node (``fp8_lower_scaled_mm``), so the kernel that runs and the recipe that is tested are one piece of code.
"""

from __future__ import annotations

from typing import Any

import torch

from recfx.ops.fp8 import AMAX_FLOOR, E4M3_MAX, FP8_DTYPE
from recfx.ops.fp8_terms import EAGER, Call

aten = torch.ops.aten


def row_scales(call: Call, xf: Any, dim: int = -1) -> Any:
    """Per-row scales ``max(amax, 1e-12) / 448`` of float32 rows ``xf`` (M, K) -> float32 (M, 1), as the reference
    (``dim``: the axis the amax reduces; it is kept with size 1)."""
    amax = call(aten.amax.default, call(aten.abs.default, xf), [dim], True)
    amax = call(aten._to_copy.default, call(aten.clamp_min.default, amax, AMAX_FLOOR), dtype=torch.float64)
    return call(aten._to_copy.default, call(aten.div.Tensor, amax, E4M3_MAX), dtype=torch.float32)


def quantize_rows(call: Call, xf: Any, scale: Any) -> Any:
    """``saturate(round(xf / scale))`` in E4M3, bit-equal to the reference, for float32 ``xf`` and ``scale``.

    Args:
        call: :data:`EAGER` or a graph recorder.
        xf: float32 rows (M, K).
        scale: float32, (M, 1) per row or [] per tensor, all > 0.

    Returns:
        float8_e4m3fn (M, K).
    """
    r = call(aten.div.Tensor, xf, scale)  # float32, within one unit in the last place of the true quotient
    exact = call(aten.mul.Tensor, call(aten._to_copy.default, r, dtype=torch.float64),
                 call(aten._to_copy.default, scale, dtype=torch.float64))  # 24 x 24 bits: exact in float64
    residual = call(aten.sub.Tensor, call(aten._to_copy.default, xf, dtype=torch.float64), exact)
    # step the magnitude up (+1) when the true quotient is larger in magnitude than r, else down (-1)
    outward = call(aten.gt.Scalar, call(aten.mul.Tensor, residual, call(aten.sign.default, xf)), 0)
    step = call(aten.sub.Tensor, call(aten.mul.Tensor, call(aten._to_copy.default, outward, dtype=torch.int32), 2),
                1)
    bits = call(aten.view.dtype, r, torch.int32)
    even = call(aten.eq.Scalar, call(aten.bitwise_and.Scalar, bits, 1), 0)
    inexact = call(aten.ne.Scalar, residual, 0)  # NaN residual (x or scale infinite): nothing to correct
    move = call(aten.logical_and.default, call(aten.logical_and.default, even, inexact),
                call(aten.isfinite.default, residual))
    odd = call(aten.where.self, move, call(aten.add.Tensor, bits, step), bits)
    r_odd = call(aten.view.dtype, odd, torch.float32)
    return call(aten._to_copy.default, call(aten.clamp.default, r_odd, -E4M3_MAX, E4M3_MAX), dtype=FP8_DTYPE)


def quantize_rows_float32(call: Call, xf: Any, scale: Any) -> Any:
    """``saturate(round(xf / scale))`` with a float32 division and one cast: 4 ops that fuse anywhere, but the
    rounding happens twice, so about one value in a thousand (bf16 inputs) lands one E4M3 step from the
    reference. The scale (from :func:`row_scales`) is still bit-equal."""
    r = call(aten.div.Tensor, xf, scale)
    return call(aten._to_copy.default, call(aten.clamp.default, r, -E4M3_MAX, E4M3_MAX), dtype=FP8_DTYPE)


def quantize_per_token(call: Call, x2: Any, exact: bool = True) -> tuple[Any, Any]:
    """Dynamic per-token quantization of rows ``x2`` (M, K) (any float dtype) -> (q fp8 (M, K), scale f32 (M, 1)).

    ``exact=True`` rounds like the reference bit for bit (:func:`quantize_rows`); ``False`` uses
    :func:`quantize_rows_float32` (fewer ops: faster to compile and to run; one E4M3 step off on rare ties).
    """
    xf = call(aten._to_copy.default, x2, dtype=torch.float32)
    scale = row_scales(call, xf)
    return (quantize_rows if exact else quantize_rows_float32)(call, xf, scale), scale


__all__ = ["EAGER", "Call", "quantize_per_token", "quantize_rows", "quantize_rows_float32", "row_scales"]
