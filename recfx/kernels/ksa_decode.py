"""Triton decode attention over one contiguous slice of a KV cache (split-K "flash decoding"), launcher, reference.

The KSA cache (``recfx/models/ksa_cache.py``, spec §5) lays a layer's visible keys out as ONE contiguous slice,
so decoding is dense attention of one query per head over [start, end) of the cache: no gather, no mask. The key
range is cut into splits; each program reduces one split for all query heads of one kv head (GQA: the group's
heads are the rows of one tl.dot), and a second kernel merges the splits by their log-sum-exp.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from recfx.kernels.ksa_reference import decode_reference as reference

__all__ = ["decode_attention", "reference"]

LOG2E = math.log2(math.e)
#: programs to aim for (about two waves of an H200's 132 SMs)
TARGET_PROGRAMS = 264
#: keys per tile; query rows are padded to at least this many (the smallest tl.dot tile)
BLOCK_N = 64
MIN_ROWS = 16
#: the largest element offset 32-bit arithmetic holds
MAX_INT32 = 2**31 - 1


@triton.jit
def _decode_split_kernel(Q, K, V, Acc, M, Lsum, stride_qb, stride_qh, stride_kb, stride_kl, stride_kh,
                         stride_vb, stride_vl, stride_vh, kv_heads, n_keys, keys_per_split, qk_scale,
                         GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, WIDE: tl.constexpr = False):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    splits = tl.num_programs(0)
    b = (pid_bh // kv_heads).to(tl.int64)
    hk = pid_bh % kv_heads
    g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    g_ok = g < GROUPS
    heads = hk * GROUPS + g
    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :], mask=g_ok[:, None] & d_ok[None, :],
                other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    lo = pid_s * keys_per_split
    hi = tl.minimum(lo + keys_per_split, n_keys)
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    for start in tl.range(lo, hi, BLOCK_N):
        idx = start + offs_n
        ld = (idx < hi)[:, None] & d_ok[None, :]
        row = idx.to(tl.int64) if WIDE else idx  # WIDE: key offsets past 2**31 elements (very long full caches)
        k = tl.load(k_base + row[:, None] * stride_kl + offs_d[None, :], mask=ld, other=0.0)
        qk = tl.dot(q, tl.trans(k))
        qk = tl.where((idx < hi)[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + row[:, None] * stride_vl + offs_d[None, :], mask=ld, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    # partials: (B, H, splits, D) and (B, H, splits); a split with no keys leaves m = -inf, l = 0
    row = (b * kv_heads * GROUPS + heads) * splits + pid_s
    tl.store(Acc + row[:, None] * BLOCK_D + offs_d[None, :], acc, mask=g_ok[:, None])
    tl.store(M + row, m_i, mask=g_ok)
    tl.store(Lsum + row, l_i, mask=g_ok)


@triton.jit
def _decode_merge_kernel(Acc, M, Lsum, Out, stride_ob, stride_oh, heads, SPLITS: tl.constexpr,
                         HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)  # one (batch, head)
    s = tl.arange(0, SPLITS)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.load(M + pid * SPLITS + s)
    m_max = tl.max(m, 0)
    w = tl.math.exp2(m - m_max)  # empty splits: exp2(-inf) = 0
    l_sum = tl.sum(tl.load(Lsum + pid * SPLITS + s) * w, 0)
    acc = tl.load(Acc + (pid * SPLITS + s)[:, None] * BLOCK_D + offs_d[None, :])
    out = tl.sum(acc * w[:, None], 0) / l_sum
    b = pid // heads
    h = pid % heads
    tl.store(Out + b * stride_ob + h * stride_oh + offs_d, out.to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)


def needs_wide_offsets(n_keys: int, *keys: torch.Tensor) -> bool:
    """Whether key offsets inside one (batch, kv head) slice exceed 32 bits: (n_keys - 1) * row stride + D."""
    return any((n_keys - 1) * x.stride(1) + x.shape[3] > MAX_INT32 for x in keys)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     splits: int | None = None, wide: bool | None = None) -> torch.Tensor:
    """One query per head over every key given: q (B, H, D), k/v (B, T, Hkv, D) (any row stride) -> (B, H, D).

    Args:
        q: the new token's queries. k, v: the visible slice of the cache (``cache.k[:, lo:hi]``), T >= 1.
        scale: softmax scale. splits: number of key splits (default: enough programs to fill the GPU).
        wide: 64-bit key offsets (default: only when ``needs_wide_offsets``; True forces them, for tests).

    Raises:
        ValueError: not CUDA (outside the Triton interpreter), no keys, mismatched heads, head dim over 256.

    Example (GPU, or ``TRITON_INTERPRET=1`` on the CPU):
        >>> q = torch.randn(1, 4, 16, dtype=torch.float16); kv = torch.randn(1, 40, 2, 16, dtype=torch.float16)
        >>> decode_attention(q, kv, kv, 0.25).shape  # doctest: +SKIP
        torch.Size([1, 4, 16])
    """
    if not (q.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise ValueError(f"decode_attention runs on CUDA tensors (or under TRITON_INTERPRET=1); got {q.device}")
    b, heads, head_dim = q.shape
    n_keys, kv_heads = k.shape[1], k.shape[2]
    if n_keys < 1:
        raise ValueError("decode_attention needs at least one key")
    if heads % kv_heads or k.shape != v.shape or k.shape[0] != b or k.shape[3] != head_dim or head_dim > 256:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; want q (B, H, D), "
                         "k/v (B, T, Hkv, D) with H a multiple of Hkv and D <= 256")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    groups = heads // kv_heads
    block_d = max(16, triton.next_power_of_2(head_dim))
    tiles = triton.cdiv(n_keys, BLOCK_N)
    if splits is None:
        splits = max(1, min(tiles, TARGET_PROGRAMS // (b * kv_heads)))
    splits = triton.next_power_of_2(splits)
    keys_per_split = triton.cdiv(tiles, splits) * BLOCK_N
    acc = torch.empty((b, heads, splits, block_d), dtype=torch.float32, device=q.device)
    m = torch.empty((b, heads, splits), dtype=torch.float32, device=q.device)
    lsum = torch.empty_like(m)
    out = torch.empty((b, heads, head_dim), dtype=q.dtype, device=q.device)
    _decode_split_kernel[(splits, b * kv_heads)](
        q, k, v, acc, m, lsum, q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), kv_heads, n_keys, keys_per_split, scale * LOG2E,
        GROUPS=groups, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_G=max(MIN_ROWS, triton.next_power_of_2(groups)),
        BLOCK_N=BLOCK_N, WIDE=needs_wide_offsets(n_keys, k, v) if wide is None else wide, num_warps=4, num_stages=3,
    )
    _decode_merge_kernel[(b * heads,)](acc, m, lsum, out, out.stride(0), out.stride(1), heads, SPLITS=splits,
                                       HEAD_DIM=head_dim, BLOCK_D=block_d)
    return out
