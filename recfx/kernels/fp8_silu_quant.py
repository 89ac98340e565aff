"""Triton kernel of ``recfx::silu_mul_fp8``: ``SiLU(gate) * up`` quantized per row to FP8 E4M3 in one pass.

A SwiGLU MLP's down projection reads ``SiLU(gate) * up``; ``cuda-fp8`` quantizes it per token. Inductor fuses the
product and the quantization into one persistent reduction over a block of the row's width rounded up to a power of
two (5,632 -> 8,192: 45% more lanes than elements) and computes SiLU with an accurate ``exp`` and a division. On an
H100 at onerec-1b's batch 32 that kernel ran at about 60% of the memory bandwidth the bf16 path's plain ``SiLU * up``
reached (BENCHMARKS.md run 10), although it writes half the bytes.

One program owns one row. Rows up to ``MAX_BLOCK`` (8,192) elements are held in registers as one block of the width
rounded up to a power of two, on 8 warps, so each element is loaded once; wider rows loop twice over chunks of
2,048 (the second pass re-reads the row, from L2). Per element, in float32::

    h = gate / (1 + exp(-gate)) * up;    scale = max(amax_row |h|, 1e-12) / 448 (in float64, rounded to float32)
    q = e4m3(clamp(h / scale, -448, 448))

Measured on an H100 (``bench/probes/silu_quant.py``, BENCHMARKS.md run 11), rows of 5,632 at M = 49,152: one padded
block on 8 warps 0.450 ms, 3 chunks of 2,048 in registers 0.466-0.567 ms, two passes 0.558-0.792 ms, Inductor's
fused kernel 0.630 ms, the bf16 path's plain ``SiLU * up`` 0.541 ms (the bytes moved at 3.35 TB/s: 0.413 ms). The
padding cost less than the chunking's extra reductions at this width (the only one measured; at 6,144 the block
idles a quarter of its lanes where 3 x 2,048 fit exactly). Inductor's kernel has the same layout (one padded block, 8
warps); it differs in its arithmetic (libdevice's accurate ``exp`` where this kernel uses the fast one), the likely
cause (not isolated).

The scale is computed from the kernel's product exactly as the reference computes it from a product (``row_scales``);
the product itself uses the GPU's fast ``exp`` and division, so it may differ from torch's SiLU in the last bits.
``q`` is rounded twice (the float32 quotient, then E4M3), as ``cuda-fp8``'s default recipe
(``quantize_rows_float32``): about one value in a thousand lands one E4M3 step from the exact quotient's rounding.
NaN propagates as in that recipe: a row holding a NaN gets a NaN scale and NaN values; an infinite value gives an
infinite scale.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from recfx.ops.fp8_terms import AMAX_FLOOR, E4M3_MAX

#: widest row held in registers as one block; wider rows take two passes over chunks of ``CHUNK``
MAX_BLOCK, CHUNK = 8192, 2048
#: warps per program (one row): measured best of 4, 8 and 16 for one 8,192 block (``bench/probes/silu_quant.py``)
NUM_WARPS = 8
_E4M3_MAX = tl.constexpr(E4M3_MAX)
_AMAX_FLOOR = tl.constexpr(AMAX_FLOOR)


@triton.jit
def _silu_mul(g_ptr, u_ptr, offs, mask):
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return (g / (1.0 + tl.exp(-g))) * u


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _amax(h):
    """max |h| of a chunk, NaN if it holds one (``tl.max`` would skip it)."""
    return tl.reduce(tl.abs(h), 0, _max_nan)


@triton.jit
def _scale(amax):
    """``max(amax, 1e-12) / 448`` in float64, rounded to float32 (``recfx.ops.fp8_rows.row_scales``)."""
    return (_max_nan(amax, _AMAX_FLOOR).to(tl.float64) / _E4M3_MAX).to(tl.float32)


@triton.jit
def _store_q(q_ptr, h, scale, offs, mask):
    r = h / scale
    q = tl.minimum(tl.maximum(r, -_E4M3_MAX, propagate_nan=tl.PropagateNan.ALL), _E4M3_MAX,
                   propagate_nan=tl.PropagateNan.ALL)
    tl.store(q_ptr + offs, q.to(tl.float8e4nv), mask=mask)


@triton.jit
def silu_quant_chunks(g_ptr, u_ptr, q_ptr, s_ptr, N, CHUNK: tl.constexpr, CHUNKS: tl.constexpr):
    """One row per program, held in registers as ``CHUNKS`` (1-4) chunks of ``CHUNK`` (recfx runs ``CHUNKS=1``; the
    probe times more)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, CHUNK)
    base = row * N
    h0 = _silu_mul(g_ptr, u_ptr, base + cols, cols < N)
    amax = _amax(h0)  # masked lanes hold SiLU(0) * 0 = 0
    if CHUNKS > 1:
        h1 = _silu_mul(g_ptr, u_ptr, base + CHUNK + cols, CHUNK + cols < N)
        amax = _max_nan(amax, _amax(h1))
    if CHUNKS > 2:
        h2 = _silu_mul(g_ptr, u_ptr, base + 2 * CHUNK + cols, 2 * CHUNK + cols < N)
        amax = _max_nan(amax, _amax(h2))
    if CHUNKS > 3:
        h3 = _silu_mul(g_ptr, u_ptr, base + 3 * CHUNK + cols, 3 * CHUNK + cols < N)
        amax = _max_nan(amax, _amax(h3))
    scale = _scale(amax)
    _store_q(q_ptr, h0, scale, base + cols, cols < N)
    if CHUNKS > 1:
        _store_q(q_ptr, h1, scale, base + CHUNK + cols, CHUNK + cols < N)
    if CHUNKS > 2:
        _store_q(q_ptr, h2, scale, base + 2 * CHUNK + cols, 2 * CHUNK + cols < N)
    if CHUNKS > 3:
        _store_q(q_ptr, h3, scale, base + 3 * CHUNK + cols, 3 * CHUNK + cols < N)
    tl.store(s_ptr + row, scale)


@triton.jit
def silu_quant_two_pass(g_ptr, u_ptr, q_ptr, s_ptr, N, CHUNK: tl.constexpr):
    """One row per program: a loop for the amax, a second loop recomputing and storing (the row read twice)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, CHUNK)
    base = row * N
    acc = tl.zeros([CHUNK], dtype=tl.float32)
    for start in range(0, N, CHUNK):
        acc = _max_nan(acc, tl.abs(_silu_mul(g_ptr, u_ptr, base + start + cols, start + cols < N)))
    scale = _scale(_amax(acc))
    for start in range(0, N, CHUNK):
        mask = start + cols < N
        _store_q(q_ptr, _silu_mul(g_ptr, u_ptr, base + start + cols, mask), scale, base + start + cols, mask)
    tl.store(s_ptr + row, scale)


def layout(k: int) -> tuple[str, int, int]:
    """(kernel, chunk, chunks) for rows of ``k`` elements: ``("chunks", B, 1)`` holds the row in one block of ``B``
    (``k`` rounded up to a power of two, at most ``MAX_BLOCK``); ``("two_pass", CHUNK, 0)`` loops over it twice."""
    block = triton.next_power_of_2(max(k, 16))
    return ("chunks", block, 1) if block <= MAX_BLOCK else ("two_pass", CHUNK, 0)


def silu_mul_quant(gate: torch.Tensor, up: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
                   num_warps: int | None = None) -> None:
    """Write ``q`` (M, K) E4M3 and ``scale`` (M, 1) float32 from contiguous ``gate`` and ``up`` (M, K).

    Raises:
        ValueError: a tensor not on CUDA (outside the interpreter) or not contiguous.
    """
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    for name, t in (("gate", gate), ("up", up), ("q", q), ("scale", scale)):
        if not (t.is_cuda or interpreting):
            raise ValueError(f"the SiLU x up FP8 kernel runs on CUDA tensors (or under TRITON_INTERPRET=1); {name} "
                             f"is on {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"the SiLU x up FP8 kernel takes contiguous tensors; {name} has strides {t.stride()}")
    m, k = gate.shape
    if m == 0:
        return
    kind, chunk, chunks = layout(k)
    warps = num_warps or (1 if interpreting else NUM_WARPS)
    if kind == "chunks":
        silu_quant_chunks[(m,)](gate, up, q, scale, k, CHUNK=chunk, CHUNKS=chunks, num_warps=warps)
    else:
        silu_quant_two_pass[(m,)](gate, up, q, scale, k, CHUNK=chunk, num_warps=warps)


__all__ = ["CHUNK", "MAX_BLOCK", "NUM_WARPS", "layout", "silu_mul_quant", "silu_quant_chunks",
           "silu_quant_two_pass"]
