"""Triton kernel of ``recfx::fp8_attention``: non-causal flash attention with FP8 products (Hopper FP8 tensor cores).

One program owns ``BLOCK_M`` query rows of one (batch, head) and walks the keys in ``BLOCK_N`` tiles, as a flash
kernel does, with both products in E4M3:

- ``S = (q8 @ k8ᵀ) * s_q * s_k * scale``, queries and keys quantized beforehand, one scale per row (the quantization
  of Q fuses into the kernel that writes Q; computing it here cost registers the loop needs: the sm_90 build spilled);
- online softmax in float32 (base 2); the unnormalised probabilities ``p = 2^(S - m) <= 1`` are cast to E4M3 as
  ``p * 448`` (a fixed scale: every ``p`` lies in (0, 1]);
- ``acc += p8 @ v8`` with the values quantized per channel (``s_v`` per head-dim column, so it factors out of the
  sum over keys); the values come transposed, ``(D, T)`` with T contiguous, the K-major operand Hopper's FP8 MMA
  needs;
- ``out = acc * s_v / (448 * l)`` in the output dtype.

Both products accumulate as Triton's sm_90 FP8 MMAs do by default, without periodic promotion to full float32
(Hopper's fast accumulation, which ``cuda-fp8``'s GEMMs also use: ``use_fast_accum``). The interpreter computes
in exact float32, so the CPU tests bound the quantization error only; the GPU accuracy comes from the benchmark's
output cosine and top-k overlap.

The row sum ``l`` adds the float32 probabilities, not their E4M3 roundings (as FlashAttention-3's FP8 path does);
the reference in ``recfx.ops.fp8_attention`` defines the function the kernel approximates to E4M3 rounding of
``p``.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

#: log2(e): the kernel's softmax is base 2
LOG2E = math.log2(math.e)
#: CUDA's largest grid extent along y
MAX_GRID_Y = 65535
#: E4M3's largest finite value
E4M3_MAX = tl.constexpr(448.0)


def _configs() -> list[triton.Config]:
    """Tile shapes for sm_90 (one small one under the Triton interpreter): those whose sm_90 build does not spill
    (``python -m recfx.kernels.resources --fp8-attention``; 128 x 128 tiles spill)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32}, num_warps=1, num_stages=1)]
    shapes = [(128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 4, 2), (128, 32, 8, 3)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in shapes]


@triton.jit
def _to_e4m3(x, SOFT_ROUND: tl.constexpr):
    """float32 -> E4M3, round to nearest even. ``SOFT_ROUND`` (the Triton interpreter) rounds on the E4M3 grid in
    float32 first: the interpreter's own cast drops the carry when rounding crosses a power of two (1.94 -> 1.0)."""
    if SOFT_ROUND:
        a = tl.abs(x)
        bits = a.to(tl.int32, bitcast=True)
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576).to(tl.float32, bitcast=True)  # 3 mantissa bits
        subnormal = (a + 16384.0) - 16384.0  # float32 spacing at 2**14 is 2**-9, E4M3's below 2**-6
        r = tl.minimum(tl.where(a < 0.015625, subnormal, normal), E4M3_MAX)
        x = tl.where(x < 0, -r, r)
    return x.to(tl.float8e4nv)


@triton.jit
def _fp8_attention_body(Q, QS, K, KS, VT, VS, O, qk_scale, heads, bh_start, n_rows, n_keys,  # noqa: E741 (O: output)
                        sq_b, sq_h, sq_n, sq_d, sqs_b, sqs_h, sqs_n, sk_b, sk_h, sk_t, sk_d, sks_b, sks_h, sks_t,
                        sv_b, sv_h, sv_d, sv_t, svs_b, svs_h, svs_d, so_b, so_h, so_n, so_d,
                        rows_bucket, bh_bucket, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        SOFT_ROUND: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = bh_start + tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    cols0 = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows

    q8 = tl.load(Q + b * sq_b + h * sq_h + rows[:, None] * sq_n + dims[None, :] * sq_d, mask=row_ok[:, None],
                 other=0.0)
    row_scale = tl.load(QS + b * sqs_b + h * sqs_h + rows * sqs_n, mask=row_ok, other=1.0) * qk_scale

    k_base = K + b * sk_b + h * sk_h
    ks_base = KS + b * sks_b + h * sks_h
    v_base = VT + b * sv_b + h * sv_h
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start in range(0, n_keys, BLOCK_N):
        cols = start + cols0
        col_ok = cols < n_keys
        k8 = tl.load(k_base + cols[:, None] * sk_t + dims[None, :] * sk_d, mask=col_ok[:, None], other=0.0)
        k_scale = tl.load(ks_base + cols * sks_t, mask=col_ok, other=0.0)
        s = tl.dot(q8, tl.trans(k8)) * row_scale[:, None] * k_scale[None, :]
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        vt8 = tl.load(v_base + dims[:, None] * sv_d + cols[None, :] * sv_t, mask=col_ok[None, :], other=0.0)
        acc = tl.dot(_to_e4m3(p * E4M3_MAX, SOFT_ROUND), tl.trans(vt8), acc)
        m_i = m_new

    v_scale = tl.load(VS + b * svs_b + h * svs_h + dims * svs_d)
    out = acc * (v_scale / E4M3_MAX)[None, :] / l_i[:, None]
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_n + dims[None, :] * so_d,
             out.to(O.dtype.element_ty), mask=row_ok[:, None])


_fp8_attention_kernel = triton.autotune(configs=_configs(),
                                        key=["HEAD_DIM", "n_keys", "rows_bucket", "bh_bucket"])(_fp8_attention_body)


def fp8_attention_kernel(q_q: torch.Tensor, q_scale: torch.Tensor, k_q: torch.Tensor, k_scale: torch.Tensor,
                         vt_q: torch.Tensor, v_scale: torch.Tensor, scale: float, out: torch.Tensor) -> torch.Tensor:
    """Launch the kernel into ``out`` (B, H, N, D), any strides; arguments as ``recfx::fp8_attention``'s.

    Raises:
        ValueError: not CUDA tensors (outside the Triton interpreter).
    """
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if not (q_q.is_cuda or interpreting):
        raise ValueError(f"the FP8 attention kernel runs on CUDA tensors (or under TRITON_INTERPRET=1); got "
                         f"{q_q.device}")
    b, h, n, d = q_q.shape  # d: a power of two >= 32 (the op checks)
    t = k_q.shape[2]
    if b * h == 0 or n == 0:
        return out

    for start in range(0, b * h, MAX_GRID_Y):  # CUDA's grid y extent is at most 65,535 (batch x heads here)
        heads_here = min(b * h - start, MAX_GRID_Y)

        def grid(meta: dict[str, int], heads_here: int = heads_here) -> tuple[int, int]:
            return triton.cdiv(n, meta["BLOCK_M"]), heads_here

        _fp8_attention_kernel[grid](
            q_q, q_scale, k_q, k_scale, vt_q, v_scale, out, scale * LOG2E, h, start, n, t,
            *q_q.stride(), *q_scale.stride(), *k_q.stride(), *k_scale.stride(), *vt_q.stride(), *v_scale.stride(),
            *out.stride(), n.bit_length(), (b * h).bit_length(), HEAD_DIM=d, SOFT_ROUND=interpreting)
    return out
