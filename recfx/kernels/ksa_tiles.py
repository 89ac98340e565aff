"""Tile-level building blocks of the KSA prefill kernel (``ksa_prefill.py``): online-softmax steps over key ranges
(pointer gathers with optional masks, or TMA descriptors), the diagonal tile shared with the summary queries, the
summary queries' own loop, and the row stores. Each works on one query tile of one (batch, head).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import triton
import triton.language as tl

__all__ = ["PREFIX_KEYS", "SEQ_KEYS", "TEXT_KEYS", "KeyRange", "KeyValues", "RowBounds", "attend",
           "attend_tma", "diagonal_tile", "softmax_step", "store_rows", "summary_rows", "tma_tile"]


class KeyValues(NamedTuple):
    """The keys and values of one (batch, kv head): base pointers and their row strides."""

    k_base: Any
    v_base: Any
    stride_k: Any
    stride_v: Any


class KeyRange(NamedTuple):
    """Key indices [lo, hi) of one index space; ``KeyRange(0, 0)`` is no key."""

    lo: Any
    hi: Any


class RowBounds(NamedTuple):
    """Which keys of a range each query row sees when masked: row r sees index i iff lo[r] <= i <= hi[r], i < end."""

    lo: Any
    hi: Any
    end: Any


# Sizes stay separate ``tl.constexpr`` parameters: in a compiled (not interpreted) kernel, Triton 3.9 loses the
# constexpr-ness of the members of a tuple built in the kernel (``tl.arange`` then refuses them).

#: key index spaces of one inner loop
PREFIX_KEYS = tl.constexpr(0)  # j-th summary in time order
TEXT_KEYS = tl.constexpr(1)  # i-th text token
SEQ_KEYS = tl.constexpr(2)  # interleaved position
#: summary query rows handled per step (the smallest tl.dot tile)
SUMMARY_ROWS = tl.constexpr(16)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def key_positions(idx, KEYS: tl.constexpr, CHUNK: tl.constexpr, SUMMARIES: tl.constexpr):
    """Interleaved positions of key indices in the ``KEYS`` index space."""
    if KEYS == PREFIX_KEYS:
        pos = (idx // SUMMARIES) * (CHUNK + SUMMARIES) + CHUNK + idx % SUMMARIES
    elif KEYS == TEXT_KEYS:
        pos = (idx // CHUNK) * (CHUNK + SUMMARIES) + idx % CHUNK
    else:
        pos = idx
    return pos


@triton.jit
def softmax_step(qk, ok, m_i, l_i, qk_scale, MASKED: tl.constexpr):
    """One online-softmax step on raw scores ``qk`` -> (p, alpha, new running max, new row sums).

    With MASKED, scores where ``ok`` is False are hidden and rows with nothing visible yet keep a zero reference
    (exp2 stays finite); without, the scale folds into one FMA per score.
    """
    if MASKED:
        qk = tl.where(ok, qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_use[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = m_new
        p = tl.math.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def attend(acc, l_i, m_i, q, kv, qk_scale, first, first_rows, text_a, text_b, text_rows, KEYS0: tl.constexpr,
           MASKED: tl.constexpr, CHUNK: tl.constexpr, SUMMARIES: tl.constexpr, HEAD_DIM: tl.constexpr,
           BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online-softmax update over up to three key ranges walked as ONE pipelined loop: ``first`` (a
    :class:`KeyRange` in the ``KEYS0`` index space), then the text ranges ``text_a`` and ``text_b``.

    With MASKED, row r sees the keys of ``first`` that ``first_rows`` (a :class:`RowBounds`) allows, and of the text
    ranges those ``text_rows`` allows; without, every row sees every key of the ranges. ``kv``: a
    :class:`KeyValues`.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    n0 = tl.cdiv(tl.maximum(first.hi - first.lo, 0), BLOCK_N)
    n01 = n0 + tl.cdiv(tl.maximum(text_a.hi - text_a.lo, 0), BLOCK_N)
    n012 = n01 + tl.cdiv(tl.maximum(text_b.hi - text_b.lo, 0), BLOCK_N)
    for i in tl.range(0, n012):
        in0 = i < n0
        start = tl.where(in0, first.lo + i * BLOCK_N,
                         tl.where(i < n01, text_a.lo + (i - n0) * BLOCK_N, text_b.lo + (i - n01) * BLOCK_N))
        idx = start + offs_n
        pos = tl.where(in0, key_positions(idx, KEYS0, CHUNK, SUMMARIES),
                       key_positions(idx, TEXT_KEYS, CHUNK, SUMMARIES))
        k_ptrs = kv.k_base + pos[:, None] * kv.stride_k + offs_d[None, :]
        v_ptrs = kv.v_base + pos[:, None] * kv.stride_v + offs_d[None, :]
        if MASKED:
            ld = (idx < tl.where(in0, first_rows.end, text_rows.end))[:, None] & d_ok[None, :]
            k = tl.load(k_ptrs, mask=ld, other=0.0)
        elif BLOCK_D == HEAD_DIM:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
        qk = tl.dot(q, tl.trans(k))
        if MASKED:
            row_lo = tl.where(in0, first_rows.lo, text_rows.lo)
            row_hi = tl.where(in0, first_rows.hi, text_rows.hi)
            ok = (idx[None, :] >= row_lo[:, None]) & (idx[None, :] <= row_hi[:, None])
            p, alpha, m_new, l_i = softmax_step(qk, ok, m_i, l_i, qk_scale, True)
        else:
            p, alpha, m_new, l_i = softmax_step(qk, None, m_i, l_i, qk_scale, False)
        if MASKED:
            v = tl.load(v_ptrs, mask=ld, other=0.0)
        elif BLOCK_D == HEAD_DIM:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def tma_tile(desc, b, hk, start, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Keys [start, start + BLOCK_N) of a chunk-grouped descriptor (``ksa_tma.chunk_descriptors``) as [BLOCK_N, D].

    The descriptors address keys in groups of ``GROUP`` consecutive rows (a chunk's text, or its summaries):
    rank 4 [B, Hkv, groups, D] when GROUP == 1, else rank 5 [B, Hkv, groups, GROUP, D]; a tile of BLOCK_N keys is
    BLOCK_N // GROUP whole groups.
    """
    if GROUP == 1:
        tile = desc.load([b, hk, start, 0]).reshape(BLOCK_N, HEAD_DIM)
    else:
        tile = desc.load([b, hk, start // GROUP, 0, 0]).reshape(BLOCK_N, HEAD_DIM)
    return tile


@triton.jit
def attend_tma(acc, l_i, m_i, q, k_desc, v_desc, b, hk, lo, hi, qk_scale, GROUP: tl.constexpr,
                HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online-softmax update over keys [lo, hi) (multiples of BLOCK_N) visible to every row, read by TMA
    (``tma_tile``)."""
    for start in tl.range(lo, hi, BLOCK_N):
        k = tma_tile(k_desc, b, hk, start, GROUP, HEAD_DIM, BLOCK_N)
        p, alpha, m_new, l_i = softmax_step(tl.dot(q, tl.trans(k)), None, m_i, l_i, qk_scale, False)
        v = tma_tile(v_desc, b, hk, start, GROUP, HEAD_DIM, BLOCK_N)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def store_rows(acc, l_i, m_i, pos, row_ok, o_base, lse_base, stride_ol, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr):
    offs_d = tl.arange(0, BLOCK_D)
    l_i = tl.where(row_ok, l_i, 1.0)  # padding rows saw nothing
    out = acc / l_i[:, None]
    o_ptrs = o_base + pos[:, None] * stride_ol + offs_d[None, :]
    tl.store(o_ptrs, out.to(o_base.dtype.element_ty), mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])
    tl.store(lse_base + pos, (m_i + tl.math.log2(l_i)) * LN2, mask=row_ok)


@triton.jit
def diagonal_tile(acc, l_i, m_i, q, q_base, k_base, v_base, o_base, lse_base, stride_ql, stride_kl, stride_vl,
                   stride_ol, t0, t, band_lo, n_text, length, qk_scale, CHUNK: tl.constexpr,
                   SUMMARIES: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The last key tile of a square query tile, text [t0, t0 + BLOCK_N): masked update of the text rows, and the
    complete attention of the tile's summary queries, which see only this tile's keys (their chunk's text) plus
    their chunk's earlier summary slots. One load of K/V serves both (instead of a separate loop over the same keys
    after the text rows). The own slots are S online-softmax steps over [rows, D] gathers: a [rows, S, D] gather
    made the sm_90 build spill ~1.8 KB per thread (``recfx.kernels.resources``)."""
    BLOCK: tl.constexpr = CHUNK + SUMMARIES
    ROWS: tl.constexpr = max(SUMMARY_ROWS, BLOCK_N // CHUNK * SUMMARIES)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    idx = t0 + tl.arange(0, BLOCK_N)
    kv_ok = idx < n_text
    kv_pos = (idx // CHUNK) * BLOCK + idx % CHUNK
    ld = kv_ok[:, None] & d_ok[None, :]
    k = tl.load(k_base + kv_pos[:, None] * stride_kl + offs_d[None, :], mask=ld, other=0.0)
    v = tl.load(v_base + kv_pos[:, None] * stride_vl + offs_d[None, :], mask=ld, other=0.0)
    # text rows: own chunk causally (and the window's lower bound when W = 0 puts it inside the tile)
    ok = (idx[None, :] >= band_lo[:, None]) & (idx[None, :] <= t[:, None]) & kv_ok[None, :]
    p, alpha, m_new, l_i = softmax_step(tl.dot(q, tl.trans(k)), ok, m_i, l_i, qk_scale, True)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    # summary rows of the tile's complete chunks: chunk text from this tile, own slots 0..j gathered
    r = tl.arange(0, ROWS)
    slot = r % SUMMARIES
    sc = t0 // CHUNK + r // SUMMARIES
    s_pos = sc * BLOCK + CHUNK + slot
    s_ok = (sc < tl.minimum((t0 + BLOCK_N) // CHUNK, n_text // CHUNK)) & (s_pos < length)
    sq = tl.load(q_base + s_pos[:, None] * stride_ql + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :],
                 other=0.0)
    ss = tl.where((idx[None, :] // CHUNK == sc[:, None]) & kv_ok[None, :], tl.dot(sq, tl.trans(k)) * qk_scale,
                  float("-inf"))
    s_m = tl.where(s_ok, tl.max(ss, 1), 0.0)  # every complete chunk has text: finite for valid rows
    ps = tl.math.exp2(ss - s_m[:, None])
    s_l = tl.sum(ps, 1)
    s_acc = tl.dot(ps.to(v.dtype), v)
    sq32 = sq.to(tl.float32)
    for j in tl.static_range(SUMMARIES):  # own slots 0..slot, one online-softmax step each
        own = (sc * BLOCK + CHUNK + j)[:, None] * stride_kl + offs_d[None, :]
        own_ok = (j <= slot) & s_ok
        ld_j = own_ok[:, None] & d_ok[None, :]
        sj = tl.sum(sq32 * tl.load(k_base + own, mask=ld_j, other=0.0).to(tl.float32), 1) * qk_scale
        sj = tl.where(own_ok, sj, float("-inf"))
        m_j = tl.maximum(s_m, sj)
        alpha_j = tl.math.exp2(s_m - m_j)
        pj = tl.math.exp2(sj - m_j)
        v_j = tl.load(v_base + (sc * BLOCK + CHUNK + j)[:, None] * stride_vl + offs_d[None, :], mask=ld_j,
                      other=0.0)
        s_acc = s_acc * alpha_j[:, None] + pj[:, None] * v_j.to(tl.float32)
        s_l = s_l * alpha_j + pj
        s_m = m_j
    s_l = tl.where(s_ok, s_l, 1.0)
    tl.store(o_base + s_pos[:, None] * stride_ol + offs_d[None, :], (s_acc / s_l[:, None]).to(o_base.dtype.element_ty),
             mask=s_ok[:, None] & d_ok[None, :])
    tl.store(lse_base + s_pos, (s_m + tl.math.log2(s_l)) * LN2, mask=s_ok)
    return acc, l_i, m_new


@triton.jit
def summary_rows(q_base, k_base, v_base, o_base, lse_base, stride_ql, stride_kl, stride_vl, stride_ol, t0, n_text,
                  length, qk_scale, CHUNK: tl.constexpr, SUMMARIES: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Summary queries of the chunks whose last text token is in the tile [t0, t0 + BLOCK_M): own chunk,
    causally, SUMMARY_ROWS rows per step."""
    BLOCK: tl.constexpr = CHUNK + SUMMARIES
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    c_lo = t0 // CHUNK
    c_hi = tl.minimum((t0 + BLOCK_M) // CHUNK, n_text // CHUNK)
    r = tl.arange(0, SUMMARY_ROWS)
    for r0 in tl.range(0, (c_hi - c_lo) * SUMMARIES, SUMMARY_ROWS):
        sc = c_lo + (r0 + r) // SUMMARIES
        s_pos = sc * BLOCK + CHUNK + (r0 + r) % SUMMARIES
        s_ok = (sc < c_hi) & (s_pos < length)
        sq = tl.load(q_base + s_pos[:, None] * stride_ql + offs_d[None, :], mask=s_ok[:, None] & d_ok[None, :],
                     other=0.0)
        s_m = tl.full([SUMMARY_ROWS], float("-inf"), tl.float32)
        s_l = tl.zeros([SUMMARY_ROWS], tl.float32)
        s_acc = tl.zeros([SUMMARY_ROWS, BLOCK_D], tl.float32)
        key_lo = (c_lo + r0 // SUMMARIES) * BLOCK
        key_hi = tl.minimum(tl.minimum(c_lo + (r0 + SUMMARY_ROWS - 1) // SUMMARIES + 1, c_hi) * BLOCK, length)
        rows = RowBounds(sc * BLOCK, s_pos, length)  # own chunk, causally, in interleaved positions
        s_acc, s_l, s_m = attend(s_acc, s_l, s_m, sq, KeyValues(k_base, v_base, stride_kl, stride_vl), qk_scale,
                                 KeyRange(key_lo, key_hi), rows, KeyRange(0, 0), KeyRange(0, 0), rows, SEQ_KEYS, True,
                                 CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        store_rows(s_acc, s_l, s_m, s_pos, s_ok, o_base, lse_base, stride_ol, HEAD_DIM, BLOCK_D)
