"""Pairs of query tiles for the text band of the dense-prefix path (``ksa_prefill(..., prefix="dense")``).

With the summary prefix taken from one dense attention (``ksa_dense.py``) the prefill kernel only walks each text
row's band, ~W*k keys. With 64-row tiles every K/V tile is read from L2 once per 64 rows, and on the H200 that
traffic is what bounds the band loop: timed with its loads removed it ran 27% faster, while 128-row tiles, which
halve the traffic, lost as much to masked boundary tiles twice as wide (``docs/ksa.md``,
``bench/results/ksa_band_ablation3.json``). Here a program owns two consecutive 64-row tiles A and B (``PAIRS``).
Their bands are the same keys shifted by one tile, so in the regular case (``pair_regular``) one TMA load of each
K/V tile feeds both, each with its own 64-row tensor-core tile and online softmax, B's scores issued before A's
softmax so the tensor cores overlap it:

    key tile    j = 0          1               2 .. W*k/64    W*k/64 (A's own text)    +1 (B's own text)
    A           low boundary   unmasked        unmasked       causal + A's summaries   -
    B           -              low boundary    unmasked       unmasked                 causal + B's summaries

Tiles outside the regular pairs (the first W chunks, the end of the sequence; every tile when the window is not a
whole number of key tiles or narrower than two) are left to the single-tile kernel, launched after this one.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from recfx.kernels.ksa_tiles import softmax_step, store_rows, summary_rows, tma_tile
from recfx.kernels.ksa_tma import box

__all__ = ["HALF", "launch_pairs", "pair_range"]

LOG2E_C = tl.constexpr(1.4426950408889634)


#: rows of one tile of a pair (and the key tile width)
HALF = 64


def pair_range(n_text: int, described_blocks: int, chunk_size: int, window: int) -> tuple[int, int]:
    """Pairs [lo, hi) of the sequence (pair p = text rows [128p, 128p + 128)) that have the regular shape of the
    module docstring's table; (0, 0) when no pair can.

    Regular means: every row's window starts at or after chunk 0 (t0 >= W*k), each tile's low boundary is exactly one
    key tile (W*k a multiple of 64, k dividing 64), at least one key tile between them (W*k >= 128), and B complete
    (its chunks are complete with their summaries, ``described_blocks`` = length // (k + 1), so they are in the
    dense call and in the TMA-described blocks: B's own text is read by TMA too).
    """
    span = window * chunk_size
    if HALF % chunk_size or span % HALF or span < 2 * HALF:
        return 0, 0
    lo, hi = -(-span // (2 * HALF)), min(n_text, described_blocks * chunk_size) // (2 * HALF)
    return (lo, hi) if hi > lo else (0, 0)


@triton.jit
def _band_pairs_kernel(Q, K, V, Out, Lse, KT, VT, PO, PL, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh,
                       stride_plc, stride_ql, stride_qh, stride_kl, stride_kh, stride_vl, stride_vh, stride_ol,
                       stride_oh, stride_lh, heads, length, n_text, window, qk_scale, pair_lo,
                       GROUPS: tl.constexpr, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    """One regular pair of tiles (``pair_range``) of one head of a batch of one (the dense path runs per row)."""
    t0 = (pair_lo + tl.num_programs(0) - 1 - tl.program_id(0)) * 2 * HALF  # late pairs first
    h = tl.program_id(1)
    hk = h // GROUPS
    band_pair(KT, VT, PO, PL, Q + h * stride_qh, K + hk * stride_kh, V + hk * stride_vh, Out + h * stride_oh,
              Lse + h * stride_lh, h, 0, hk, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc,
              stride_ql, stride_kl, stride_vl, stride_ol, t0, n_text, length, window, qk_scale, CHUNK, HEAD_DIM, HALF)


@triton.jit
def _pair_summaries_kernel(Q, K, V, Out, Lse, stride_ql, stride_qh, stride_kl, stride_kh, stride_vl, stride_vh,
                           stride_ol, stride_oh, stride_lh, heads, length, n_text, qk_scale, pair_lo,
                           GROUPS: tl.constexpr, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    """The summary queries of the chunks of one pair of tiles (kept out of the pair kernel: its registers)."""
    t0 = (pair_lo + tl.program_id(0)) * 2 * HALF
    h = tl.program_id(1)
    hk = h // GROUPS
    summary_rows(Q + h * stride_qh, K + hk * stride_kh, V + hk * stride_vh, Out + h * stride_oh, Lse + h * stride_lh,
                 stride_ql, stride_kl, stride_vl, stride_ol, t0, n_text, length, qk_scale, CHUNK, 1, HEAD_DIM,
                 HEAD_DIM, 2 * HALF, HALF)


def launch_pairs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, kt: Any,
                 vt: Any, given: tuple[torch.Tensor, torch.Tensor], chunk_size: int, window: int,
                 qk_scale: float) -> tuple[int, int]:
    """Run the regular pairs of a batch of one (q (1, L, H, D), S = 1, TMA text descriptors ``kt``/``vt``, the
    dense prefix ``given``); returns the text rows [lo, lo + count) done, which the single-tile launch skips."""
    _, length, heads, head_dim = q.shape
    n_text = length - length // (chunk_size + 1)
    lo, hi = pair_range(n_text, length // (chunk_size + 1), chunk_size, window)
    if hi == lo:
        return 0, 0
    po, pl = given
    for desc in (kt, vt):
        desc.block_shape = box(5, HALF, chunk_size, head_dim)
    _band_pairs_kernel[(hi - lo, heads)](
        q, k, v, out, lse, kt, vt, po, pl, *po.stride()[:3], *pl.stride(), q.stride(1), q.stride(2), k.stride(1),
        k.stride(2), v.stride(1), v.stride(2), out.stride(1), out.stride(2), lse.stride(1), heads, length, n_text,
        window, qk_scale, lo, GROUPS=heads // k.shape[2], CHUNK=chunk_size, HEAD_DIM=head_dim, HALF=HALF,
        num_warps=4, num_stages=2)
    _pair_summaries_kernel[(hi - lo, heads)](
        q, k, v, out, lse, q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2), out.stride(1),
        out.stride(2), lse.stride(1), heads, length, n_text, qk_scale, lo, GROUPS=heads // k.shape[2],
        CHUNK=chunk_size, HEAD_DIM=head_dim, HALF=HALF, num_warps=4, num_stages=1)
    return lo * 2 * HALF, (hi - lo) * 2 * HALF


@triton.jit
def _queries(t0, q_base, stride_ql, window, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    """One tile's text rows: (t, band start, q). Loaded again after the shared loop rather than kept in registers
    through it (register pressure serialises the tensor-core instructions)."""
    t = t0 + tl.arange(0, HALF)
    c = t // CHUNK
    q = tl.load(q_base + (c * (CHUNK + 1) + t % CHUNK)[:, None] * stride_ql + tl.arange(0, HEAD_DIM)[None, :])
    return t, (c - window) * CHUNK, q


@triton.jit
def _start(t0, PO, PL, h, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, window,
           CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    """One tile's online-softmax state (acc, row sums, running max) started from the dense prefix."""
    t = t0 + tl.arange(0, HALF)
    cp = t // CHUNK - window - 1  # >= 0: the row's prefix is in the dense call (rows of chunk W have none)
    given = cp >= 0
    po = PO + h * stride_poh + (t % CHUNK) * stride_pop + cp * stride_poc
    acc = tl.load(po[:, None] + tl.arange(0, HEAD_DIM)[None, :], mask=given[:, None], other=0.0).to(tl.float32)
    pl = PL + h * stride_plh + (t % CHUNK) * stride_plp + cp * stride_plc
    m_i = tl.where(given, tl.load(pl, mask=given, other=0.0) * LOG2E_C, float("-inf"))
    return acc, tl.where(given, 1.0, 0.0), m_i


@triton.jit
def _update(acc, l_i, m_i, s, v, ok, qk_scale, MASKED: tl.constexpr):
    p, alpha, m_new, l_i = softmax_step(s, ok, m_i, l_i, qk_scale, MASKED)
    return tl.dot(p.to(v.dtype), v, acc * alpha[:, None]), l_i, m_new


@triton.jit
def _pair_step(acc_a, l_a, m_a, acc_b, l_b, m_b, q_a, q_b, k, v, ok_a, ok_b, qk_scale, MASKED_A: tl.constexpr,
               MASKED_B: tl.constexpr):
    """Both tiles over one K/V tile; B's scores are issued before A's softmax."""
    s_a = tl.dot(q_a, tl.trans(k))
    s_b = tl.dot(q_b, tl.trans(k))
    acc_a, l_a, m_a = _update(acc_a, l_a, m_a, s_a, v, ok_a, qk_scale, MASKED_A)
    acc_b, l_b, m_b = _update(acc_b, l_b, m_b, s_b, v, ok_b, qk_scale, MASKED_B)
    return acc_a, l_a, m_a, acc_b, l_b, m_b


@triton.jit
def band_pair(KT, VT, PO, PL, q_base, k_base, v_base, o_base, lse_base, h, b, hk, stride_pop, stride_poh, stride_poc,
              stride_plp, stride_plh, stride_plc, stride_ql, stride_kl, stride_vl, stride_ol, t0, n_text, length,
              window, qk_scale, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    """The text rows of a regular pair of tiles (``pair_regular``) and the summary rows of their chunks, stored."""
    t_b0 = t0 + HALF
    acc_a, l_a, m_a = _start(t0, PO, PL, h, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc,
                             window, CHUNK, HEAD_DIM, HALF)
    acc_b, l_b, m_b = _start(t_b0, PO, PL, h, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh,
                             stride_plc, window, CHUNK, HEAD_DIM, HALF)
    _, _, q_a = _queries(t0, q_base, stride_ql, window, CHUNK, HEAD_DIM, HALF)
    _, _, q_b = _queries(t_b0, q_base, stride_ql, window, CHUNK, HEAD_DIM, HALF)
    offs_n = tl.arange(0, HALF)
    first = (t0 // CHUNK - window) * CHUNK // HALF * HALF
    # both unmasked (first: the boundary steps' buffers then reuse the loop's shared memory)
    for start in tl.range(first + 2 * HALF, t0, HALF):
        k = tma_tile(KT, b, hk, start, CHUNK, HEAD_DIM, HALF)
        v = tma_tile(VT, b, hk, start, CHUNK, HEAD_DIM, HALF)
        acc_a, l_a, m_a, acc_b, l_b, m_b = _pair_step(acc_a, l_a, m_a, acc_b, l_b, m_b, q_a, q_b, k, v, None, None,
                                                      qk_scale, False, False)
    # then the boundary tiles, each tile alone (one score tile live at a time keeps the registers within budget:
    # both live here serialised the tensor-core instructions), their K/V loaded two tiles at a time so the load
    # latencies overlap
    t_a, lo_a, q_a = _queries(t0, q_base, stride_ql, window, CHUNK, HEAD_DIM, HALF)
    t_b, lo_b, q_b = _queries(t_b0, q_base, stride_ql, window, CHUNK, HEAD_DIM, HALF)
    k0 = tma_tile(KT, b, hk, first, CHUNK, HEAD_DIM, HALF)
    v0 = tma_tile(VT, b, hk, first, CHUNK, HEAD_DIM, HALF)
    k1 = tma_tile(KT, b, hk, first + HALF, CHUNK, HEAD_DIM, HALF)
    v1 = tma_tile(VT, b, hk, first + HALF, CHUNK, HEAD_DIM, HALF)
    acc_a, l_a, m_a = _update(acc_a, l_a, m_a, tl.dot(q_a, tl.trans(k0)), v0,
                              (first + offs_n)[None, :] >= lo_a[:, None], qk_scale, True)  # A's low boundary
    acc_a, l_a, m_a = _update(acc_a, l_a, m_a, tl.dot(q_a, tl.trans(k1)), v1, None, qk_scale, False)
    acc_b, l_b, m_b = _update(acc_b, l_b, m_b, tl.dot(q_b, tl.trans(k1)), v1,
                              (first + HALF + offs_n)[None, :] >= lo_b[:, None], qk_scale, True)  # B's low boundary
    # the tiles' own text: causal for their own rows (A's is all visible to B), plus their summary queries
    k0 = tma_tile(KT, b, hk, t0, CHUNK, HEAD_DIM, HALF)
    v0 = tma_tile(VT, b, hk, t0, CHUNK, HEAD_DIM, HALF)
    k1 = tma_tile(KT, b, hk, t_b0, CHUNK, HEAD_DIM, HALF)
    v1 = tma_tile(VT, b, hk, t_b0, CHUNK, HEAD_DIM, HALF)
    acc_a, l_a, m_a = _update(acc_a, l_a, m_a, tl.dot(q_a, tl.trans(k0)), v0, (t0 + offs_n)[None, :] <= t_a[:, None],
                              qk_scale, True)
    store_rows(acc_a, l_a, m_a, (t_a // CHUNK) * (CHUNK + 1) + t_a % CHUNK, t_a < n_text, o_base, lse_base,
               stride_ol, HEAD_DIM, HEAD_DIM)
    acc_b, l_b, m_b = _update(acc_b, l_b, m_b, tl.dot(q_b, tl.trans(k0)), v0, None, qk_scale, False)
    acc_b, l_b, m_b = _update(acc_b, l_b, m_b, tl.dot(q_b, tl.trans(k1)), v1,
                              (t_b0 + offs_n)[None, :] <= t_b[:, None], qk_scale, True)
    store_rows(acc_b, l_b, m_b, (t_b // CHUNK) * (CHUNK + 1) + t_b % CHUNK, t_b < n_text, o_base, lse_base,
               stride_ol, HEAD_DIM, HEAD_DIM)
