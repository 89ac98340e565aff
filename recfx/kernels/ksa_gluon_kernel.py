"""Device code of the Gluon band kernel (launcher, scope and configuration: ``ksa_gluon.py``).

A persistent, warp-specialised FlashAttention-3-style loop over the KSA text band, in Gluon (Triton's explicit
dialect: layouts, shared memory, mbarriers and wgmma are spelled out):

- Persistent: one CTA per SM walks row tiles ``BLOCK_M`` = 128 text rows of one (batch, head) at a time;
  neighbouring CTAs take neighbouring row tiles of one head, so their key windows meet in L2. ``BALANCED``: the
  tiles are dealt sorted by cost (full-band tiles first) in snake order, which evens out the CTAs' work.
- Warp-specialised: a producer warp brings each row tile's Q and then its K and V tiles (``BLOCK_N`` keys, grouped
  by whole chunks of the interleaved layout) through TMA into rings of ``STAGES`` slots, running ahead across row
  tiles; two consumer warpgroups own 64 rows each and release every slot through an ``empty`` mbarrier.
- In each consumer, iteration j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back on the tensor cores,
  waits for S_j only, and computes the softmax of S_j while the P @ V product still runs.
- Rows of chunks past the window start from the dense prefix's (out, lse); only the band's first tile (the window's
  lower bound, chunk granular) and the tiles crossing the diagonal are masked. The rows go out through the
  consumer's half of the Q buffer and one TMA store.
- Each consumer also computes the summary queries of its chunks (S = 1: their chunk's text and themselves) on the
  CUDA cores; with ``SUMMARY_SMEM`` under the row tile's last P @ V, from its last K / V ring tile (its own text,
  kept until read) and the summary rows' q, k, v that the producer loads with Q, else from L2 afterwards.

Gluon kernels do not run under the Triton interpreter: they are checked on the GPU against float64
(``bench/probes/gluon_band.py``, ``bench/ksa.py --parts checks``); on the CPU the tests build them for sm_90.
"""

from __future__ import annotations

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401 (the launcher's, ksa_gluon.py)
except ImportError:  # a Triton without Gluon: the Triton kernel runs the band
    gluon = None
else:  # TMA global -> shared copy: async_copy_global_to_shared in Triton 3.6, async_load in later releases (3.9)
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

__all__ = ["REGS_CONSUMER", "REGS_PRODUCER"]

#: registers per thread after setmaxnreg: consumer warpgroup, producer partition. The default partition (the first
#: consumer) is raised to 256, the CTA starts with 168 x 384 threads, and the producer partition is padded to a
#: warpgroup, so 256 + consumer + producer must stay <= 504 or a register request never completes.
REGS_CONSUMER = 216
REGS_PRODUCER = 32
if gluon is not None:
    _REGS_CONSUMER = gl.constexpr(REGS_CONSUMER)
    _REGS_PRODUCER = gl.constexpr(REGS_PRODUCER)


if gluon is not None:

    @gluon.jit
    def _softmax(s, m_i, l_i, start, t, band_lo, qk_scale, masked,
                 S_LAYOUT: gl.constexpr, BLOCK_N: gl.constexpr):
        """Online-softmax step on raw scores -> (p fp32, alpha, new max, new sums); masks only when ``masked``."""
        if masked:
            cols = start + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, S_LAYOUT))
            ok = (cols[None, :] >= band_lo[:, None]) & (cols[None, :] <= t[:, None])
            s = gl.where(ok, s * qk_scale, float("-inf"))
            m_new = gl.maximum(m_i, gl.max(s, 1))
            m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
            p = gl.exp2(s - m_use[:, None])
        else:
            m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
            m_use = m_new
            p = gl.exp2(s * qk_scale - m_use[:, None])
        alpha = gl.exp2(m_i - m_use)
        return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)

    @gluon.jit
    def _release(empty, pred, HOLD: gl.constexpr):
        """Release a ring slot; with ``HOLD`` only where ``pred`` (the row tile's last slot stays taken)."""
        if HOLD:
            mbarrier.arrive(empty, pred=pred)
        else:
            mbarrier.arrive(empty)

    @gluon.jit
    def _pass(full, empty, g, STAGES: gl.constexpr):
        """Consumer side of a ring tile this consumer does not compute: wait for it, release it."""
        mbarrier.wait(full.index(g % STAGES), (g // STAGES) & 1)
        mbarrier.arrive(empty.index(g % STAGES))

    @gluon.jit
    def _span(t0, first, n_text, window, CHUNK: gl.constexpr, ROWS: gl.constexpr, BLOCK_N: gl.constexpr):
        """``ROWS`` text rows from t0: their key tiles [j_lo, j_hi) of the row tile's range (tile 0 starts at key
        ``first``), from their first band tile to their diagonal, and the key below which a tile is masked (window
        bound). A half past the end of the text computes one tile that nobody stores."""
        t_last = gl.minimum(t0 + ROWS, n_text) - 1
        lo_max = gl.maximum(t_last // CHUNK - window, 0) * CHUNK
        j_lo = (gl.maximum(t0 // CHUNK - window, 0) * CHUNK // BLOCK_N * BLOCK_N - first) // BLOCK_N
        j_hi = (t_last + 1 - first + BLOCK_N - 1) // BLOCK_N
        return gl.minimum(j_lo, j_hi - 1), j_hi, lo_max

    @gluon.jit
    def _prefix_start(PO, PL, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, dense_chunks,
                      h, t0, n_text, window, CHUNK: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                      O_LAYOUT: gl.constexpr, ROW_S: gl.constexpr):
        """Starting (max in log2 units, sum, O) of ``ROWS`` text rows from t0: the dense prefix's (lse, out) for rows
        of chunks past the window, else empty."""
        ROW_O: gl.constexpr = gl.SliceLayout(1, O_LAYOUT)
        t = t0 + gl.arange(0, ROWS, layout=ROW_S)
        cp = t // CHUNK - window - 1
        given = (t < n_text) & (cp >= 0) & (cp < dense_chunks)
        pl = PL + h * stride_plh + (t % CHUNK) * stride_plp + cp * stride_plc
        m_i = gl.where(given, gl.load(pl, mask=given, other=0.0) * 1.4426950408889634, float("-inf"))
        t_o = t0 + gl.arange(0, ROWS, layout=ROW_O)
        cp_o = t_o // CHUNK - window - 1
        given_o = (t_o < n_text) & (cp_o >= 0) & (cp_o < dense_chunks)
        d_o = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, O_LAYOUT))
        po = PO + h * stride_poh + (t_o % CHUNK) * stride_pop + cp_o * stride_poc
        o = gl.load(po[:, None] + d_o[None, :], mask=given_o[:, None], other=0.0).to(gl.float32)
        return m_i, gl.where(given, 1.0, 0.0), o

    @gluon.jit
    def _store_rows(o, m_i, l_i, t0, q_half, q_half_box, o_desc, b, h, lse_base, n_text, CHUNK: gl.constexpr,
                    ROWS: gl.constexpr, O_LAYOUT: gl.constexpr, ROW_S: gl.constexpr):
        """``ROWS`` text rows from t0 out: O / l through this half of the row tile's Q buffer (``q_half``, read by
        no MMA any more; ``q_half_box``: the same as the TMA box) and a TMA store to the text positions (rows past
        the text are clipped), the natural log-sum-exp by plain stores. The caller waits for the TMA store
        (``tma.store_wait``) before the Q buffer is refilled."""
        ok = t0 + gl.arange(0, ROWS, layout=ROW_S) < n_text
        l_o = gl.convert_layout(gl.where(ok, l_i, 1.0), gl.SliceLayout(1, O_LAYOUT))
        q_half.store((o / l_o[:, None]).to(q_half.dtype))
        fence_async_shared()
        _tma_store(o_desc, [b, h, t0 // CHUNK, 0, 0], q_half_box)
        t = t0 + gl.arange(0, ROWS, layout=ROW_S)
        pos = (t // CHUNK) * (CHUNK + 1) + t % CHUNK
        gl.store(lse_base + pos, (m_i + gl.log2(gl.where(ok, l_i, 1.0))) * 0.6931471805599453, mask=ok)

    @gluon.jit
    def _summary_rows(q_base, k_base, v_base, o_base, lse_base, stride_ql, stride_kl, stride_vl, stride_ol,
                      c_first, n_chunks, qk_scale, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr,
                      ROWS: gl.constexpr):
        """Summary queries (S = 1) of the chunks [c_first, c_first + ROWS / k): each sees its chunk's text and
        itself. CUDA-core dot products over [chunks, k, D] tiles read from L2 (the band tiles just brought them)."""
        L3: gl.constexpr = gl.BlockedLayout([1, 1, HEAD_DIM // 16], [1, 2, 16], [4, 1, 1], [2, 1, 0])  # one warpgroup
        CH: gl.constexpr = ROWS // CHUNK
        L_CK: gl.constexpr = gl.SliceLayout(2, L3)
        L_CD: gl.constexpr = gl.SliceLayout(1, L3)
        ch = gl.arange(0, CH, layout=gl.SliceLayout(1, L_CK))
        kk = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, L_CK))
        dd = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, L_CD))
        c = c_first + ch
        ok = c < n_chunks
        text_pos = (c * (CHUNK + 1))[:, None] + kk[None, :]  # [CH, k]
        sum_pos = c * (CHUNK + 1) + CHUNK  # [CH]
        ok3 = ok[:, None, None]
        d3 = dd[None, None, :]
        qs = gl.load(q_base + sum_pos[:, None, None] * stride_ql + d3, mask=ok3, other=0.0).to(gl.float32)
        kt = gl.load(k_base + text_pos[:, :, None] * stride_kl + d3, mask=ok3, other=0.0).to(gl.float32)
        scores = gl.sum(kt * qs, 2) * qk_scale  # [CH, k]
        ks = gl.load(k_base + sum_pos[:, None, None] * stride_kl + d3, mask=ok3, other=0.0).to(gl.float32)
        own = gl.max(gl.sum(ks * qs, 2), 1) * qk_scale  # [CH] (the max squeezes the unit axis)
        m = gl.maximum(gl.max(scores, 1), own)
        p = gl.exp2(scores - m[:, None])
        p_own = gl.exp2(own - m)
        l_sum = gl.sum(p, 1) + p_own
        vt = gl.load(v_base + text_pos[:, :, None] * stride_vl + d3, mask=ok3, other=0.0).to(gl.float32)
        vs = gl.load(v_base + sum_pos[:, None, None] * stride_vl + d3, mask=ok3, other=0.0).to(gl.float32)
        acc = gl.sum(p[:, :, None] * vt, 1) + gl.sum(p_own[:, None, None] * vs, 1)  # [CH, D]
        _summary_store(o_base, lse_base, stride_ol, acc, l_sum, m, sum_pos, ok, dd, L_CD)

    @gluon.jit
    def _summary_store(o_base, lse_base, stride_ol, acc, l_sum, m, sum_pos, ok, dd, L_CD: gl.constexpr):
        """Summary rows out: acc [CH, D] / l_sum at interleaved positions ``sum_pos`` (columns ``dd``), natural
        log-sum-exp."""
        out = acc / gl.convert_layout(l_sum, gl.SliceLayout(1, L_CD))[:, None]
        pos_cd = gl.convert_layout(sum_pos, gl.SliceLayout(1, L_CD))
        ok_cd = gl.convert_layout(ok, gl.SliceLayout(1, L_CD))
        gl.store(o_base + pos_cd[:, None] * stride_ol + dd[None, :], out.to(o_base.dtype.element_ty),
                 mask=ok_cd[:, None])
        gl.store(lse_base + sum_pos, (m + gl.log2(l_sum)) * 0.6931471805599453, mask=ok)

    @gluon.jit
    def _pack_rows(packs, index, CH: gl.constexpr, HEAD_DIM: gl.constexpr, HALF: gl.constexpr):
        """This consumer's CH summary rows of pack ``index`` ([2 CH, D] per row tile)."""
        return packs.index(index).reshape([2 * CH, HEAD_DIM]).slice(HALF * CH, CH)

    @gluon.jit
    def _summary_from_tiles(packs, first_pack, k_tile, v_tile, k_empty, o_base, lse_base, stride_ol,
                            c_first, n_chunks, qk_scale, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr,
                            ROWS: gl.constexpr, HALF: gl.constexpr):
        """``_summary_rows`` from shared memory: the chunks' text is this half of the row tile's last K / V ring
        tiles (BLOCK_N = BLOCK_M: the tile of the row tile's own text; the K tile released here once read, the V
        tile by the caller once P V has read it too); the summary rows' q, k and v came with Q (``packs``
        first_pack, + 1, + 2: [BLOCK_M / k, D] each)."""
        L3: gl.constexpr = gl.BlockedLayout([1, 1, HEAD_DIM // 16], [1, 2, 16], [4, 1, 1], [2, 1, 0])  # one warpgroup
        CH: gl.constexpr = ROWS // CHUNK
        L_CK: gl.constexpr = gl.SliceLayout(2, L3)
        L_CD: gl.constexpr = gl.SliceLayout(1, L3)
        qs = gl.expand_dims(_pack_rows(packs, first_pack, CH, HEAD_DIM, HALF).load(L_CD), 1)
        ks = gl.expand_dims(_pack_rows(packs, first_pack + 1, CH, HEAD_DIM, HALF).load(L_CD), 1)
        kt = k_tile.reshape([2 * CH, CHUNK, HEAD_DIM]).slice(HALF * CH, CH).load(L3)
        qs = qs.to(gl.float32)
        scores = gl.sum(kt.to(gl.float32) * qs, 2) * qk_scale  # [CH, k]
        own = gl.max(gl.sum(ks.to(gl.float32) * qs, 2), 1) * qk_scale  # [CH] (the max squeezes the unit axis)
        mbarrier.arrive(k_empty)
        m = gl.maximum(gl.max(scores, 1), own)
        p = gl.exp2(scores - m[:, None])
        p_own = gl.exp2(own - m)
        l_sum = gl.sum(p, 1) + p_own
        vt = v_tile.reshape([2 * CH, CHUNK, HEAD_DIM]).slice(HALF * CH, CH).load(L3)
        vs = gl.expand_dims(_pack_rows(packs, first_pack + 2, CH, HEAD_DIM, HALF).load(L_CD), 1)
        acc = gl.sum(p[:, :, None] * vt.to(gl.float32), 1) + gl.sum(p_own[:, None, None] * vs.to(gl.float32), 1)
        c = c_first + gl.arange(0, CH, layout=gl.SliceLayout(1, L_CK))
        sum_pos = c * (CHUNK + 1) + CHUNK
        _summary_store(o_base, lse_base, stride_ol, acc, l_sum, m, sum_pos, c < n_chunks,
                       gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, L_CD)), L_CD)

    @gluon.jit
    def _rounds(total, BALANCED: gl.constexpr):
        """Row tiles this CTA computes: every num_programs-th of ``total`` (BALANCED: in snake order)."""
        pid = gl.program_id(0)
        n_prog = gl.num_programs(0)
        if BALANCED:
            last = total // n_prog  # the partial round (if any): slots 0 .. total % n_prog - 1, reversed when odd
            slot = gl.where(last % 2 == 0, pid, n_prog - 1 - pid)
            return last + (slot < total % n_prog).to(gl.int32)
        else:
            return (total - pid + n_prog - 1) // n_prog

    @gluon.jit
    def _tile_id(r, n_row_tiles, n_short, total, BALANCED: gl.constexpr):
        """The CTA's r-th row tile. Round robin; or, BALANCED, over the tiles sorted by cost (every head's full-band
        tiles, then the short tiles at the start of the text, longest first) dealt in snake order (rounds alternate
        direction), which evens out the CTAs' total work."""
        pid = gl.program_id(0)
        n_prog = gl.num_programs(0)
        if BALANCED:
            s = r * n_prog + gl.where(r % 2 == 0, pid, n_prog - 1 - pid)
            n_long = n_row_tiles - n_short
            heads_total = total // n_row_tiles
            tile_long = (s // gl.maximum(n_long, 1)) * n_row_tiles + s % gl.maximum(n_long, 1)
            s_short = s - heads_total * n_long
            tile_short = (s_short % heads_total) * n_row_tiles + n_long + s_short // heads_total
            return gl.where(s_short < 0, tile_long, tile_short)
        else:
            return pid + r * n_prog

    @gluon.jit
    def _tile(tile_id, n_row_tiles, heads, n_text, window, GROUPS: gl.constexpr, CHUNK: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
        """Row tile ``tile_id`` -> (b, h, kv head, first text row, first key, key tiles). Consecutive ids are
        neighbouring row tiles of one head (their key windows overlap in L2), the longest first."""
        pid_bh = tile_id // n_row_tiles
        t0 = (n_row_tiles - 1 - tile_id % n_row_tiles) * BLOCK_M
        t_last = gl.minimum(t0 + BLOCK_M, n_text) - 1
        first = gl.maximum(t0 // CHUNK - window, 0) * CHUNK // BLOCK_N * BLOCK_N
        h = pid_bh % heads
        return pid_bh // heads, h, h // GROUPS, t0, first, (t_last + 1 - first + BLOCK_N - 1) // BLOCK_N

    @gluon.jit
    def _consumer(half: gl.constexpr, rings, ptrs, strides, sizes, GROUPS: gl.constexpr,
                  HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  STAGES: gl.constexpr, Q_BUFS: gl.constexpr, BALANCED: gl.constexpr, SUMMARY_SMEM: gl.constexpr):
        """One consumer warpgroup of the persistent kernel: rows [t0 + half * BLOCK_M / 2, + BLOCK_M / 2) of every
        row tile of this CTA, and the summary queries of their chunks. ``rings``, ``ptrs``, ``strides`` and ``sizes``
        are the kernel's arguments of those kinds, grouped (``_band_kernel``).

        The row tile's key tiles are ring entries g0 .. g0 + n_tiles - 1 (slot g % STAGES, phase g // STAGES), every
        one released through ``empty``, also those this half does not need. With ``SUMMARY_SMEM`` the last one (the
        row tile's own text) stays taken until the summary queries have read it.

        Iteration j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back and computes the softmax of S_j under
        the latter; the rows' starting state is loaded under the first Q K^T, and the summary queries (from shared
        memory) run on the CUDA cores under the last P V. The rows go out through this half of the Q buffer and a
        TMA store; the buffer is handed back once the store has read it (with two or more buffers at the next row
        tile's first scores, so the store overlaps that row tile's start)."""
        q_bufs, q_full, q_empty, k_bufs, v_bufs, k_full, v_full, k_empty, v_empty, packs = rings
        Q, K, V, Out, Lse, PO, PL, o_desc = ptrs
        (stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, stride_qb, stride_ql, stride_qh,
         stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh, stride_ob, stride_ol, stride_oh, stride_lb,
         stride_lh) = strides
        dense_chunks, n_row_tiles, n_short, n_tiles_total, heads, n_text, window, qk_scale = sizes
        ROWS: gl.constexpr = BLOCK_M // 2
        S_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, BLOCK_N, 16])
        O_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, HEAD_DIM, 16])
        P_LAYOUT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=O_LAYOUT, k_width=2)
        ROW_S: gl.constexpr = gl.SliceLayout(1, S_LAYOUT)
        ROW_O: gl.constexpr = gl.SliceLayout(1, O_LAYOUT)
        dtype: gl.constexpr = k_bufs.dtype
        zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, S_LAYOUT)
        g0 = 0
        for r in range(_rounds(n_tiles_total, BALANCED)):
            b, h, hk, t0, first, n_tiles = _tile(_tile_id(r, n_row_tiles, n_short, n_tiles_total, BALANCED),
                                                 n_row_tiles, heads, n_text, window, GROUPS, CHUNK, BLOCK_M, BLOCK_N)
            t0 += half * ROWS
            j_lo, j_hi, lo_max = _span(t0, first, n_text, window, CHUNK, ROWS, BLOCK_N)
            b64 = b.to(gl.int64)
            mbarrier.wait(q_full.index(r % Q_BUFS), (r // Q_BUFS) & 1)
            q_tile = q_bufs.index(r % Q_BUFS).reshape([BLOCK_M, HEAD_DIM]).slice(half * ROWS, ROWS)
            for j in range(0, j_lo):
                _pass(k_full, k_empty, g0 + j, STAGES)
                _pass(v_full, v_empty, g0 + j, STAGES)

            # first tile's scores; the rows' start loaded meanwhile
            g = g0 + j_lo
            mbarrier.wait(k_full.index(g % STAGES), (g // STAGES) & 1)
            k_tile = k_bufs.index(g % STAGES).reshape([BLOCK_N, HEAD_DIM])
            s_tok = warpgroup_mma(q_tile, k_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
            m_i, l_i, o = _prefix_start(PO, PL, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh,
                                        stride_plc, dense_chunks, h, t0, n_text, window, CHUNK, ROWS, HEAD_DIM,
                                        O_LAYOUT, ROW_S)
            t = t0 + gl.arange(0, ROWS, layout=ROW_S)
            band_lo = gl.maximum(t // CHUNK - window, 0) * CHUNK
            s, _, _ = warpgroup_mma_wait(0, deps=(s_tok, q_tile, k_tile))
            _release(k_empty.index(g % STAGES), j_lo < j_hi - 1, SUMMARY_SMEM)
            if Q_BUFS > 1:  # the previous rows' TMA store has read their Q buffer: hand it back
                tma.store_wait(0)
                mbarrier.arrive(q_empty.index((r + Q_BUFS - 1) % Q_BUFS), pred=r > 0)
            start = first + j_lo * BLOCK_N
            p, alpha, m_i, l_i = _softmax(s, m_i, l_i, start, t, band_lo, qk_scale,
                                          (start < lo_max) | (start + BLOCK_N > t0 + 1), S_LAYOUT, BLOCK_N)
            o = o * gl.convert_layout(alpha, ROW_O)[:, None]
            p = gl.convert_layout(p.to(dtype), P_LAYOUT)

            # S_j and P_{j-1} V_{j-1} in flight together, the softmax of S_j under the latter
            for j in range(j_lo + 1, j_hi):
                g = g0 + j
                mbarrier.wait(k_full.index(g % STAGES), (g // STAGES) & 1)
                k_tile = k_bufs.index(g % STAGES).reshape([BLOCK_N, HEAD_DIM])
                s_tok = warpgroup_mma(q_tile, k_tile.permute((1, 0)), zero_s, use_acc=False, is_async=True)
                mbarrier.wait(v_full.index((g - 1) % STAGES), ((g - 1) // STAGES) & 1)
                v_tile = v_bufs.index((g - 1) % STAGES).reshape([BLOCK_N, HEAD_DIM])
                o_tok = warpgroup_mma(p, v_tile, o, is_async=True)
                s, _, _ = warpgroup_mma_wait(1, deps=(s_tok, q_tile, k_tile))
                _release(k_empty.index(g % STAGES), j < j_hi - 1, SUMMARY_SMEM)
                start = first + j * BLOCK_N
                p_new, alpha, m_i, l_i = _softmax(s, m_i, l_i, start, t, band_lo, qk_scale,
                                                  (start < lo_max) | (start + BLOCK_N > t0 + 1), S_LAYOUT, BLOCK_N)
                p_next = gl.convert_layout(p_new.to(dtype), P_LAYOUT)
                o, _, _ = warpgroup_mma_wait(0, deps=(o_tok, p, v_tile))
                mbarrier.arrive(v_empty.index((g - 1) % STAGES))
                o = o * gl.convert_layout(alpha, ROW_O)[:, None]
                p = p_next

            # last P V; the summary queries of this half's chunks on the CUDA cores meanwhile
            g = g0 + j_hi - 1
            mbarrier.wait(v_full.index(g % STAGES), (g // STAGES) & 1)
            v_tile = v_bufs.index(g % STAGES).reshape([BLOCK_N, HEAD_DIM])
            o_tok = warpgroup_mma(p, v_tile, o, is_async=True)
            o_base = Out + b64 * stride_ob + h * stride_oh
            lse_base = Lse + b64 * stride_lb + h * stride_lh
            if SUMMARY_SMEM:  # (BLOCK_N = BLOCK_M: this half's last tile is the row tile's last, its own text)
                _summary_from_tiles(packs, (r % Q_BUFS) * 3, k_bufs.index(g % STAGES), v_bufs.index(g % STAGES),
                                    k_empty.index(g % STAGES), o_base, lse_base, stride_ol, t0 // CHUNK,
                                    n_text // CHUNK, qk_scale, HEAD_DIM, CHUNK, ROWS, half)
            o, _, _ = warpgroup_mma_wait(0, deps=(o_tok, p, v_tile))
            mbarrier.arrive(v_empty.index(g % STAGES))
            q_box = q_bufs.index(r % Q_BUFS).slice(half * (ROWS // CHUNK), ROWS // CHUNK, 2)  # = q_tile, as a box
            _store_rows(o, m_i, l_i, t0, q_tile, q_box, o_desc, b, h, lse_base, n_text, CHUNK, ROWS, O_LAYOUT, ROW_S)
            if not SUMMARY_SMEM:  # from L2, under the TMA store (its [chunks, k, D] tiles do not fit beside P V's)
                _summary_rows(Q + b64 * stride_qb + h * stride_qh, K + b64 * stride_kb + hk * stride_kh,
                              V + b64 * stride_vb + hk * stride_vh, o_base, lse_base, stride_ql, stride_kl,
                              stride_vl, stride_ol, t0 // CHUNK, n_text // CHUNK, qk_scale, HEAD_DIM, CHUNK, ROWS)
            if Q_BUFS == 1:  # (the next row tile's Q goes into this buffer: wait for the store here)
                tma.store_wait(0)
                mbarrier.arrive(q_empty.index(0))
            for j in range(j_hi, n_tiles):
                _pass(k_full, k_empty, g0 + j, STAGES)
                _pass(v_full, v_empty, g0 + j, STAGES)
            g0 += n_tiles
        tma.store_wait(0)

    @gluon.jit
    def _producer(descs, q_bufs, q_full, q_empty, k_bufs, v_bufs, k_full, v_full, k_empty, v_empty, packs,
                  n_row_tiles, n_short, n_tiles_total, heads, n_text, window, GROUPS: gl.constexpr,
                  CHUNK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                  Q_BUFS: gl.constexpr, BALANCED: gl.constexpr, SUMMARY_SMEM: gl.constexpr):
        """One warp: each row tile's Q (and with SUMMARY_SMEM its summary rows' q, k, v), then its K and V tiles,
        into the rings as soon as both consumers released the slot (runs ahead across row tiles)."""
        q_desc, k_desc, v_desc, qs_desc, ks_desc, vs_desc = descs
        g = 0
        r = 0
        for i in range(_rounds(n_tiles_total, BALANCED)):
            b, h, hk, t0, first, n_tiles = _tile(_tile_id(i, n_row_tiles, n_short, n_tiles_total, BALANCED),
                                                 n_row_tiles, heads, n_text, window, GROUPS, CHUNK, BLOCK_M, BLOCK_N)
            mbarrier.wait(q_empty.index(r % Q_BUFS), ((r // Q_BUFS) + 1) & 1, pred=r >= Q_BUFS)
            if SUMMARY_SMEM:
                mbarrier.expect(q_full.index(r % Q_BUFS), q_desc.block_type.nbytes + 3 * qs_desc.block_type.nbytes)
                pack = (r % Q_BUFS) * 3
                _tma_load(qs_desc, [b, h, t0 // CHUNK, 0], q_full.index(r % Q_BUFS), packs.index(pack))
                _tma_load(ks_desc, [b, hk, t0 // CHUNK, 0], q_full.index(r % Q_BUFS), packs.index(pack + 1))
                _tma_load(vs_desc, [b, hk, t0 // CHUNK, 0], q_full.index(r % Q_BUFS), packs.index(pack + 2))
            else:
                mbarrier.expect(q_full.index(r % Q_BUFS), q_desc.block_type.nbytes)
            _tma_load(q_desc, [b, h, t0 // CHUNK, 0, 0], q_full.index(r % Q_BUFS), q_bufs.index(r % Q_BUFS))
            for j in range(n_tiles):
                slot = g % STAGES
                coord = [b, hk, (first + j * BLOCK_N) // CHUNK, 0, 0]
                mbarrier.wait(k_empty.index(slot), ((g // STAGES) + 1) & 1, pred=g >= STAGES)
                mbarrier.expect(k_full.index(slot), k_desc.block_type.nbytes)
                _tma_load(k_desc, coord, k_full.index(slot), k_bufs.index(slot))
                mbarrier.wait(v_empty.index(slot), ((g // STAGES) + 1) & 1, pred=g >= STAGES)
                mbarrier.expect(v_full.index(slot), v_desc.block_type.nbytes)
                _tma_load(v_desc, coord, v_full.index(slot), v_bufs.index(slot))
                g += 1
            r += 1  # noqa: SIM113 (no enumerate in Gluon)

    @gluon.jit
    def _band_kernel(q_desc, k_desc, v_desc, qs_desc, ks_desc, vs_desc, o_desc, Q, K, V, Out, Lse, PO, PL,
                     stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, dense_chunks,
                     stride_qb, stride_ql, stride_qh, stride_kb, stride_kl, stride_kh,
                     stride_vb, stride_vl, stride_vh, stride_ob, stride_ol, stride_oh, stride_lb, stride_lh,
                     n_row_tiles, n_short, n_tiles_total, heads, n_text, window, qk_scale,
                     GROUPS: gl.constexpr, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, BLOCK_M: gl.constexpr,
                     BLOCK_N: gl.constexpr, STAGES: gl.constexpr, Q_BUFS: gl.constexpr, BALANCED: gl.constexpr,
                     SUMMARY_SMEM: gl.constexpr, num_warps: gl.constexpr):
        dtype: gl.constexpr = q_desc.dtype
        k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
        v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
        k_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(k_full.index(i), count=1)
            mbarrier.init(v_full.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=2)
            mbarrier.init(v_empty.index(i), count=2)
        # two consumer warpgroups of BLOCK_M / 2 rows each, one producer warp
        q_bufs = gl.allocate_shared_memory(dtype, [Q_BUFS] + q_desc.block_type.shape, q_desc.layout)
        q_full = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(Q_BUFS):
            mbarrier.init(q_full.index(i), count=1)
            mbarrier.init(q_empty.index(i), count=2)
        if SUMMARY_SMEM:  # per Q buffer: the row tile's summary rows of q, k and v
            gl.static_assert(BLOCK_N == BLOCK_M, "the summary queries read the row tile's own text tile")
            packs = gl.allocate_shared_memory(dtype, [Q_BUFS * 3] + qs_desc.block_type.shape, qs_desc.layout)
        else:  # (never touched)
            packs = q_bufs
        rings = (q_bufs, q_full, q_empty, k_bufs, v_bufs, k_full, v_full, k_empty, v_empty, packs)
        ptrs = (Q, K, V, Out, Lse, PO, PL, o_desc)
        strides = (stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, stride_qb, stride_ql,
                   stride_qh, stride_kb, stride_kl, stride_kh, stride_vb, stride_vl, stride_vh, stride_ob, stride_ol,
                   stride_oh, stride_lb, stride_lh)
        sizes = (dense_chunks, n_row_tiles, n_short, n_tiles_total, heads, n_text, window, qk_scale)
        gl.warp_specialize([
            (_consumer, (0, rings, ptrs, strides, sizes, GROUPS, HEAD_DIM, CHUNK, BLOCK_M, BLOCK_N,
                         STAGES, Q_BUFS, BALANCED, SUMMARY_SMEM)),
            (_consumer, (1, rings, ptrs, strides, sizes, GROUPS, HEAD_DIM, CHUNK, BLOCK_M, BLOCK_N,
                         STAGES, Q_BUFS, BALANCED, SUMMARY_SMEM)),
            (_producer, ((q_desc, k_desc, v_desc, qs_desc, ks_desc, vs_desc), q_bufs, q_full, q_empty, k_bufs,
                         v_bufs, k_full, v_full, k_empty, v_empty, packs, n_row_tiles, n_short, n_tiles_total, heads,
                         n_text, window, GROUPS, CHUNK, BLOCK_M, BLOCK_N, STAGES, Q_BUFS, BALANCED, SUMMARY_SMEM)),
        ], [4, 1], [_REGS_CONSUMER, _REGS_PRODUCER])
