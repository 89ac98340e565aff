"""Triton kernel of ``recfx::fp8_block_mm``: FP8 GEMMs with block scales, dense or grouped by expert.

One program owns a ``BLOCK_M x BLOCK_N`` output tile and walks K in steps of the scale block ``B`` (``BLOCK_K = B``),
so every K step has one activation scale per row and one weight scale per column::

    acc += (q_x[rows, kb] @ w_q[cols, kb]ᵀ) * s_x[rows, kb] * s_w[cols // R, kb]      (float32)

with ``R`` the weight rows per scale row (``B`` for B x B blocks, 1 for 1 x B groups), the order of
``recfx::fp8_linear_blocks``' reference: one FP8 product per K block, scaled, then added. The weight is read as
stored, ``[N, K]`` row-major: the K-major operand Hopper's FP8 MMA takes for both sides.

Grouped (MoE): the rows are sorted by expert and ``offs[e]`` is where expert ``e``'s rows end (as
``torch._grouped_mm``'s ``offs``); the weights are stacked ``[E, N, K]`` with scales ``[E, ...]``. Program ``m``
along the first grid axis finds its expert by walking ``offs`` (each expert's rows take ``ceil(rows_e / BLOCK_M)``
tiles; the grid has ``ceil(M / BLOCK_M) + E`` of them, the surplus ones return at once), so a tile never mixes two
experts and all experts run in one launch.

The interpreter computes the products in exact float32. On sm_90 ``tl.dot`` of E4M3 operands runs on the FP8
tensor cores; each K block's product is added to the float32 accumulator outside the MMA (a promotion every ``B``
elements, the one DeepSeek-V3's block-scaled GEMMs rely on). Inside a block the MMA accumulates as Hopper's fast FP8
mode does (``FAST_ACCUM``, the default, as ``cuda-fp8``'s ``_scaled_mm`` GEMMs), or with a promotion every 32
elements (``FAST_ACCUM=False``: ``backend_options={"fast_accum": False}``).

Measured on an H100 (BENCHMARKS.md run 5): correct (cosine 0.9999986 to float64) but slow, 285-532 TFLOP/s dense and
384-441 grouped against cuBLASLt's 1,322-1,349 row-wise and bf16's 700-750: a plain pointer-load loop with the
block product and the accumulator both live, where DeepGEMM-class kernels use TMA and warp specialisation.

Rows are read only below ``M`` (and, grouped, below ``offs[-1]``: the rows after it are not written); ``offs`` must
not decrease.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from recfx.ops.fp8_terms import BLOCK_SIZES

#: CUDA's largest grid extent along y (output column tiles)
MAX_GRID_Y = 65535
#: elements an FP8 MMA accumulates between promotions to float32 without fast accumulation
PRECISE_ACC = 32
#: (BLOCK_M, BLOCK_N, warps, stages) autotuned on the GPU: those whose pipelined sm_90 build for 128 x 128 weight
#: blocks does not spill (``python -m recfx.kernels.resources --fp8-block-gemm``; 128 x 128 tiles on 4 warps spill
#: 440 bytes: each K block's product and the accumulator are both live). With 1 x 128 weight groups (a scale per
#: column) the 128 x 128 tiles spill 88 bytes; with 256-blocks the 4-stage config needs 256 KB of shared memory,
#: which the autotuner skips on sm_90.
SM90_SHAPES = ((128, 128, 8, 3), (128, 128, 8, 4), (64, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3))


def _configs() -> list[triton.Config]:
    """:data:`SM90_SHAPES` (one small tile under the Triton interpreter)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in SM90_SHAPES]


@triton.jit
def _fp8_block_gemm_body(A, AS, W, WS, C, OFFS, M, N, K, experts,
                         sa_m, sa_k, sas_m, sas_k, sw_e, sw_n, sw_k, sws_e, sws_n, sws_k, sc_m, sc_n,
                         m_bucket, n_bucket, k_bucket, W_ROWS: tl.constexpr, GROUPED: tl.constexpr,
                         IMPRECISE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if GROUPED:
        expert = -1
        row0 = 0
        row_end = 0
        start = 0
        first_tile = 0
        for e in range(0, experts):
            end = tl.load(OFFS + e)
            tiles = tl.cdiv(end - start, BLOCK_M)
            hit = (pid_m >= first_tile) & (pid_m < first_tile + tiles)
            expert = tl.where(hit, e, expert)
            row0 = tl.where(hit, start + (pid_m - first_tile) * BLOCK_M, row0)
            row_end = tl.where(hit, end, row_end)
            first_tile += tiles
            start = end
    else:
        expert = 0
        row0 = pid_m * BLOCK_M
        row_end = M
    if expert >= 0:
        rows = row0 + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ks0 = tl.arange(0, BLOCK_K)
        row_ok = (rows < row_end) & (rows < M)
        col_ok = cols < N
        rows64 = rows.to(tl.int64)
        cols64 = cols.to(tl.int64)
        e64 = tl.full([], 0, tl.int64) + expert
        w_base = W + e64 * sw_e
        ws_base = WS + e64 * sws_e
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for kb in range(0, tl.cdiv(K, BLOCK_K)):
            ks = kb * BLOCK_K + ks0
            k_ok = ks < K
            ks64 = ks.to(tl.int64)
            a = tl.load(A + rows64[:, None] * sa_m + ks64[None, :] * sa_k, mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0)
            w = tl.load(w_base + cols64[:, None] * sw_n + ks64[None, :] * sw_k,
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            a_s = tl.load(AS + rows64 * sas_m + kb * sas_k, mask=row_ok, other=0.0)
            w_s = tl.load(ws_base + (cols64 // W_ROWS) * sws_n + kb * sws_k, mask=col_ok, other=0.0)
            acc += tl.dot(a, tl.trans(w), max_num_imprecise_acc=IMPRECISE) * a_s[:, None] * w_s[None, :]
        tl.store(C + rows64[:, None] * sc_m + cols64[None, :] * sc_n, acc.to(C.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])


_fp8_block_gemm_kernel = triton.autotune(configs=_configs(), key=["m_bucket", "n_bucket", "k_bucket", "W_ROWS",
                                                                  "GROUPED", "IMPRECISE", "BLOCK_K"])(
    _fp8_block_gemm_body)


def fp8_block_gemm_kernel(q_x: torch.Tensor, s_x: torch.Tensor, w_q: torch.Tensor, w_s: torch.Tensor,
                          offs: torch.Tensor | None, block_size: int, w_rows: int, out: torch.Tensor,
                          fast_accum: bool = True) -> torch.Tensor:
    """Launch the kernel into ``out`` (M, N); arguments as ``recfx::fp8_block_mm``'s (checked there), with
    ``w_rows`` the weight rows per scale row and, without ``offs``, ``w_q`` (N, K) / ``w_s`` 2-D.

    Raises:
        ValueError: not CUDA tensors (outside the Triton interpreter), or a block size the kernel does not take.
    """
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if not (q_x.is_cuda or interpreting):
        raise ValueError(f"the FP8 block-scaled GEMM kernel runs on CUDA tensors (or under TRITON_INTERPRET=1); "
                         f"got {q_x.device}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"the FP8 block-scaled GEMM kernel takes scale blocks of {BLOCK_SIZES}, got {block_size}")
    m, k = q_x.shape
    grouped = offs is not None
    if not grouped:  # one expert: (1, N, K)
        w_q, w_s = w_q[None], w_s[None]
    experts, n = w_q.shape[0], w_q.shape[1]
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_()
    offsets = offs if offs is not None else s_x  # never read without groups
    if triton.cdiv(n, 32) > MAX_GRID_Y:
        raise ValueError(f"N={n} is too large for one launch of the FP8 block-scaled GEMM kernel (at most "
                         f"{32 * MAX_GRID_Y})")

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return triton.cdiv(m, meta["BLOCK_M"]) + (experts if grouped else 0), triton.cdiv(n, meta["BLOCK_N"])

    _fp8_block_gemm_kernel[grid](
        q_x, s_x, w_q, w_s, out, offsets, m, n, k, experts,
        *q_x.stride(), *s_x.stride(), *w_q.stride(), *w_s.stride(), *out.stride(),
        m.bit_length(), n.bit_length(), k.bit_length(), W_ROWS=w_rows, GROUPED=grouped,
        IMPRECISE=None if fast_accum else PRECISE_ACC, BLOCK_K=block_size)
    return out
