"""Triton prefill kernel of ``recfx::ksa_attention`` (docs/ksa.md), launcher and reference.

Layout: interleaved [B, L, H, D] (text chunks of k, each followed by S summaries), GQA-aware. Each program owns
BLOCK_M consecutive *text* queries of one head and walks two key ranges, both contiguous in their own index space:

- the summary prefix: summary j (in time order) is visible to text rows of chunk c iff j < (c - W) * S;
- the text band: text token i is visible to text row t of chunk c iff (c - W) * k <= i <= t.

Key addresses are computed from those indices (``key_positions``), so gathering the summaries into a dense prefix
costs no copy. Tiles entirely inside both bounds of every row run without a mask; only the boundary tiles are
masked; tiles outside are never visited. The summary rows of the chunks that end in the tile follow (their keys
are their own chunk, a contiguous span of the interleaved sequence). Accumulation is float32; the kernel returns
the natural log-sum-exp of every row.

Where ``tma_supported`` holds (sm90+, 16-bit, power-of-two k / S / D), unmasked tiles are read through TMA
descriptors that group keys by whole chunks (``recfx/kernels/ksa_tma.py``), masked ones through pointer gathers;
with square tiles the diagonal key tile is loaded once for the text rows and the summary rows (``diagonal_tile``). The
design choices and what was measured for them on the H200: ``docs/ksa.md``.

With S = 1 and long sequences the launcher takes the text rows' summary prefix from ONE dense causal attention
(``recfx/kernels/ksa_dense.py``: cuDNN on the GPU) and the kernel starts those rows from its (out, lse) (``DENSE``),
walking only the text band and the summary queries. On Hopper, where ``ksa_gluon.band_supported`` holds, that band
and the summary queries run in the Gluon kernel instead (``recfx/kernels/ksa_gluon.py`` and ``ksa_gluon_kernel.py``:
persistent and warp-specialised, 81.7% / 80.9% of the ideal ratio at 32K text tokens in two runs against 73% for
this kernel; docs/ksa.md).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from recfx.kernels import ksa_dense, ksa_gluon
from recfx.kernels.ksa_reference import prefill_reference as reference
from recfx.kernels.ksa_reference import split_length
from recfx.kernels.ksa_tiles import (
    PREFIX_KEYS,
    KeyRange,
    KeyValues,
    RowBounds,
    attend,
    attend_tma,
    diagonal_tile,
    store_rows,
    summary_rows,
)
from recfx.kernels.ksa_tma import chunk_descriptors, set_boxes, tma_supported

__all__ = ["chooses_dense_prefix", "ksa_prefill", "reference", "tma_supported"]

LOG2E = math.log2(math.e)
LOG2E_C = tl.constexpr(LOG2E)
#: offsets are 32-bit inside the kernel (the batch/head base is 64-bit)
MAX_INT32 = 2**31 - 1


def _configs() -> list[triton.Config]:
    """Block sizes for the H200 (D = 128); one small config under the Triton interpreter (CPU tests).

    (BLOCK_M, BLOCK_N, warps, stages, SPLIT_LOOPS). The first run on the H200 (bench/results/ksa_run1.json) had
    the split-loop shapes below within 5% of each other; merged loops (two pipelined loops instead of five) and
    deeper pipelines are tried beside them.
    """
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_LOOPS": False}, num_warps=1, num_stages=1,
                              pre_hook=set_boxes)]
    shapes = [(64, 64, 4, 3, False), (64, 64, 4, 2, False), (128, 64, 8, 3, False), (128, 128, 8, 3, False),
              (128, 128, 8, 2, False), (128, 64, 8, 4, False), (128, 64, 8, 3, True), (128, 128, 8, 3, True)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_LOOPS": split}, num_warps=w, num_stages=s,
                          pre_hook=set_boxes)
            for bm, bn, w, s, split in shapes]


#: sequences shorter than 2**(SHORT_SEQ_BUCKET - 1) = 4096 positions (seq_bucket = length.bit_length()) try only the
#: first config (compile time dominates there)
SHORT_SEQ_BUCKET = 13


#: with the summary prefix dense (DENSE), the kernel walks only the text band (~1K keys per row): these were fastest
#: there (bench/results/ksa_sweep7.json: 64x64 with 2 stages 8-15% faster than with 3); autotuning among all shapes
#: could pick a slower one on timing noise
DENSE_SHAPES = ((64, 64, 4, 2), (128, 128, 8, 2))


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    if named_args.get("DENSE", kwargs.get("DENSE")):
        configs = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                   in DENSE_SHAPES and not c.kwargs["SPLIT_LOOPS"]] or configs
    return configs[:1] if named_args["seq_bucket"] < SHORT_SEQ_BUCKET else configs


@triton.jit
def _ksa_prefill_body(Q, K, V, Out, Lse, KT, VT, KP, VP, PO, PL,
                        stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, dense_chunks,
                        stride_qb, stride_ql, stride_qh, stride_kb, stride_kl, stride_kh,
                        stride_vb, stride_vl, stride_vh, stride_ob, stride_ol, stride_oh, stride_lb, stride_lh,
                        heads, length, n_text, n_sum, window, qk_scale, seq_bucket,
                        GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                        CHUNK: tl.constexpr, SUMMARIES: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_LOOPS: tl.constexpr,
                        TMA: tl.constexpr, DENSE: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # tiles late in the sequence (longest prefix) first
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = pid_bh % heads
    hk = h // GROUPS
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    o_base = Out + b * stride_ob + h * stride_oh
    lse_base = Lse + b * stride_lb + h * stride_lh
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    BLOCK: tl.constexpr = CHUNK + SUMMARIES

    # ---- text queries t0 .. t_last (chunks c0 .. c1)
    t0 = pid_m * BLOCK_M
    t = t0 + tl.arange(0, BLOCK_M)
    t_ok = t < n_text
    c = t // CHUNK
    q_pos = c * BLOCK + t % CHUNK
    q = tl.load(q_base + q_pos[:, None] * stride_ql + offs_d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    t_last = tl.minimum(t0 + BLOCK_M, n_text) - 1
    c0 = t0 // CHUNK
    c1 = t_last // CHUNK
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    zero = tl.zeros([BLOCK_M], tl.int32)

    # summaries of the chunks older than the window: prefix indices [0, (c - W) * S); the first ones are visible
    # to every row of the tile (no mask)
    pre_hi = tl.maximum(c - window, 0) * SUMMARIES - 1
    pre_full = tl.maximum(c0 - window, 0) * SUMMARIES // BLOCK_N * BLOCK_N
    pre_end = tl.maximum(c1 - window, 0) * SUMMARIES
    # text of the own chunk (causally) and of the W previous chunks: text indices [(c - W) * k, t]
    band_lo = tl.maximum(c - window, 0) * CHUNK
    first = tl.maximum(c0 - window, 0) * CHUNK // BLOCK_N * BLOCK_N
    full_lo = tl.cdiv(tl.maximum(c1 - window, 0) * CHUNK, BLOCK_N) * BLOCK_N  # keys >= this: above every row's start
    full_hi = (t0 + 1) // BLOCK_N * BLOCK_N  # keys < this: causal for every row
    if DENSE:  # rows of chunks W+1 .. W+dense_chunks start from the dense prefix's (out, lse) (ksa_dense.py)
        cp = c - window - 1
        given = t_ok & (cp >= 0) & (cp < dense_chunks)
        po = PO + h * stride_poh + (t % CHUNK) * stride_pop + cp * stride_poc
        acc = tl.load(po[:, None] + offs_d[None, :], mask=given[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        pl = PL + h * stride_plh + (t % CHUNK) * stride_plp + cp * stride_plc
        m_i = tl.where(given, tl.load(pl, mask=given, other=0.0) * LOG2E_C, float("-inf"))
        l_i = tl.where(given, 1.0, 0.0)
        # only rows past the dense call (a trailing incomplete chunk) still walk the prefix, all masked
        pre_hi = tl.where(given, -1, pre_hi)
        pre_end = tl.where(c1 - window - 1 >= dense_chunks, pre_end, 0)
        pre_full = 0
    empty = full_lo >= full_hi
    full_lo = tl.where(empty, first, full_lo)
    full_hi = tl.where(empty, first, full_hi)
    end = t_last + 1
    # TMA tiles are whole chunks / summary groups, and tiles start on chunk boundaries
    USE_TMA: tl.constexpr = TMA and (CHUNK <= BLOCK_N) and (SUMMARIES <= BLOCK_N) and (CHUNK <= BLOCK_M)
    # square tiles: the diagonal key tile is the tile's own text, shared with its summary queries
    DIAGONAL: tl.constexpr = USE_TMA and (BLOCK_M == BLOCK_N)
    kv = KeyValues(k_base, v_base, stride_kl, stride_vl)
    prefix_rows = RowBounds(zero, pre_hi, n_sum)  # prefix index i is visible to row r iff i <= pre_hi[r]
    text_rows = RowBounds(band_lo, t, n_text)  # text index i is visible to row r iff band_lo[r] <= i <= t[r]
    no_keys = KeyRange(0, 0)
    if USE_TMA:  # unmasked tiles through TMA descriptors (one loop per range), masked ones through pointers
        b32 = pid_bh // heads
        acc, l_i, m_i = attend_tma(acc, l_i, m_i, q, KP, VP, b32, hk, 0, pre_full, qk_scale, SUMMARIES, HEAD_DIM,
                                    BLOCK_N)
        acc, l_i, m_i = attend_tma(acc, l_i, m_i, q, KT, VT, b32, hk, full_lo, full_hi, qk_scale, CHUNK, HEAD_DIM,
                                    BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, KeyRange(pre_full, pre_end), prefix_rows,
                               KeyRange(first, full_lo), KeyRange(full_hi, t0 if DIAGONAL else end), text_rows,
                               PREFIX_KEYS, True, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        if DIAGONAL:
            acc, l_i, m_i = diagonal_tile(acc, l_i, m_i, q, q_base, k_base, v_base, o_base, lse_base, stride_ql,
                                           stride_kl, stride_vl, stride_ol, t0, t, band_lo, n_text, length,
                                           qk_scale, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
    elif SPLIT_LOOPS:  # one loop per range
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, KeyRange(0, pre_full), prefix_rows, no_keys, no_keys,
                               text_rows, PREFIX_KEYS, False, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, KeyRange(pre_full, pre_end), prefix_rows, no_keys,
                               no_keys, text_rows, PREFIX_KEYS, True, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, no_keys, prefix_rows, KeyRange(first, full_lo),
                               no_keys, text_rows, PREFIX_KEYS, True, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, no_keys, prefix_rows, KeyRange(full_lo, full_hi),
                               no_keys, text_rows, PREFIX_KEYS, False, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, no_keys, prefix_rows, KeyRange(full_hi, end),
                               no_keys, text_rows, PREFIX_KEYS, True, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
    else:  # all unmasked tiles in one pipelined loop, all masked tiles in another
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, KeyRange(0, pre_full), prefix_rows,
                               KeyRange(full_lo, full_hi), no_keys, text_rows, PREFIX_KEYS, False, CHUNK, SUMMARIES,
                               HEAD_DIM, BLOCK_D, BLOCK_N)
        acc, l_i, m_i = attend(acc, l_i, m_i, q, kv, qk_scale, KeyRange(pre_full, pre_end), prefix_rows,
                               KeyRange(first, full_lo), KeyRange(full_hi, end), text_rows, PREFIX_KEYS, True, CHUNK,
                               SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_N)
    store_rows(acc, l_i, m_i, q_pos, t_ok, o_base, lse_base, stride_ol, HEAD_DIM, BLOCK_D)

    if not DIAGONAL:  # (square TMA tiles did these in diagonal_tile)
        summary_rows(q_base, k_base, v_base, o_base, lse_base, stride_ql, stride_kl, stride_vl, stride_ol, t0,
                      n_text, length, qk_scale, CHUNK, SUMMARIES, HEAD_DIM, BLOCK_D, BLOCK_M, BLOCK_N)


_ksa_prefill_kernel = triton.autotune(
    configs=_configs(), key=["HEAD_DIM", "CHUNK", "SUMMARIES", "window", "GROUPS", "seq_bucket", "TMA", "DENSE"],
    prune_configs_by={"early_config_prune": _prune})(_ksa_prefill_body)


def ksa_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int, window: int,
                scale: float, config: dict[str, int] | None = None, tma: bool | None = None,
                prefix: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the prefill kernel: q (B, L, H, D), k/v (B, L, Hkv, D) -> (out (B, L, H, D), lse (B, H, L) float32).

    ``config`` (BLOCK_M, BLOCK_N, SPLIT_LOOPS, num_warps, num_stages) bypasses autotuning (tests, sweeps).
    ``tma=False`` forces pointer loads; None uses TMA where ``tma_supported``. Either one keeps the Triton kernel
    for the band too; otherwise the dense path hands the band to the Gluon kernel where ``band_supported``.
    ``prefix="dense"`` takes the summary prefix of the text rows from one dense causal attention
    (``recfx/kernels/ksa_dense.py``, cuDNN on the GPU) and runs the rest in the kernel; ``"kernel"`` walks it in the
    kernel; None picks dense where ``dense_prefix_supported`` (S = 1, cuDNN attention on sm90+, and enough prefix
    chunks: ``ksa_dense.MIN_PREFIX_CHUNKS_GLUON`` with the Gluon band, ``MIN_PREFIX_CHUNKS`` without).

    Raises:
        ValueError: tensors not on a CUDA device (outside the Triton interpreter), not bf16/fp16/fp32, head dim
            over 256, k / v shapes that differ or whose kv heads do not divide the query heads, offsets that do not
            fit 32 bits, ``tma=True`` or ``prefix="dense"`` where they cannot run.

    Example (GPU, or ``TRITON_INTERPRET=1`` on the CPU):
        >>> q = torch.randn(1, 12, 2, 16, dtype=torch.float16); kv = torch.randn(1, 12, 1, 16, dtype=torch.float16)
        >>> out, lse = ksa_prefill(q, kv, kv, 4, 1, 1, 0.25)  # doctest: +SKIP
    """
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    if not (q.is_cuda or interpreting):
        raise ValueError(f"ksa_prefill runs on CUDA tensors (or under TRITON_INTERPRET=1); got device {q.device}")
    if q.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"ksa_prefill takes bf16/fp16/fp32 tensors, got {q.dtype}")
    if prefix not in (None, "dense", "kernel"):
        raise ValueError(f"prefix must be None, 'dense' or 'kernel', got {prefix!r}")
    b, length, heads, head_dim = q.shape
    if head_dim > 256:
        raise ValueError(f"ksa_prefill supports head dims up to 256, got {head_dim}")
    if k.shape[2] < 1 or heads % k.shape[2] or k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape (B, L, Hkv, D) with the query heads ({heads}) a multiple "
                         f"of Hkv; got k {tuple(k.shape)}, v {tuple(v.shape)}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if max(length * x.stride(1) + x.shape[2] * x.stride(2) for x in (q, k, v)) > MAX_INT32:
        raise ValueError(f"sequence of {length} positions is too long for 32-bit offsets per batch row")
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((b, heads, length), dtype=torch.float32, device=q.device)
    if length == 0 or b == 0:
        return out, lse
    window, tma, gluon_band, dense = _plan(q, k, v, chunk_size, summaries, window, config, tma, prefix)
    launch = _Launch(chunk_size, summaries, window, scale, config, tma)
    if not dense:
        launch(q, k, v, out, lse, None)
        return out, lse
    for row in range(b):  # the dense call's views address one batch row
        qb, kb, vb, ob, lb = q[row:row + 1], k[row:row + 1], v[row:row + 1], out[row:row + 1], lse[row:row + 1]
        given = ksa_dense.dense_prefix(qb, kb, vb, chunk_size, window, scale)
        if gluon_band:  # text band and summary rows by the Gluon kernel (Hopper)
            ksa_gluon.ksa_band(qb, kb, vb, ob, lb, given, chunk_size, window, scale)
        else:
            launch(qb, kb, vb, ob, lb, given)
    return out, lse


def _plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int, window: int,
          config: dict[str, int] | None, tma: bool | None, prefix: str | None) -> tuple[int, bool, bool, bool]:
    """:func:`ksa_prefill`'s decisions for non-empty inputs with contiguous last dims: (the window, clamped to what
    the text can see, TMA loads, band on the Gluon kernel, summary prefix from the dense call). Raises the ValueErrors
    ``ksa_prefill`` documents for ``tma`` and ``prefix``."""
    n_text, _ = split_length(q.shape[1], chunk_size, summaries)
    window = min(window, n_text // chunk_size + 1)  # a wider window sees the same keys
    supported = tma_supported(k, chunk_size, summaries) and tma_supported(v, chunk_size, summaries)
    if tma and not supported:
        raise ValueError("tma=True needs an sm90+ GPU, bf16/fp16 K/V with 16-byte aligned strides, power-of-two "
                         f"chunk size, summary count and head dim (got {chunk_size}, {summaries}, {k.shape[3]}) and at "
                         "least one complete chunk; pass tma=None to use TMA only where it applies")
    tma = supported if tma is None else tma
    dense_runs = ksa_dense.dense_prefix_runs(q, summaries)
    if prefix == "dense" and not (dense_runs and ksa_dense.dense_prefix_chunks(n_text, chunk_size, window) > 0):
        raise ValueError("prefix='dense' needs S = 1, bf16/fp16 inputs with a head dim that is a multiple of 8 and at "
                         "most 128, cuDNN attention on an sm90+ GPU, and text past the window "
                         f"(got S={summaries}, {q.dtype}, D={q.shape[3]}, {n_text} text tokens, window {window}); "
                         "pass prefix=None to use it only where it applies")
    # the Gluon band kernel only ever runs beside the dense prefix (and not for explicit Triton settings)
    gluon_band = (prefix != "kernel" and dense_runs and config is None and tma
                  and ksa_gluon.band_supported(q, k, v, chunk_size, summaries))
    if prefix is None:  # the dense prefix where the text is long enough for it to pay; sooner with the Gluon band
        min_chunks = ksa_dense.MIN_PREFIX_CHUNKS_GLUON if gluon_band else ksa_dense.MIN_PREFIX_CHUNKS
        return window, tma, gluon_band, ksa_dense.dense_prefix_supported(q, chunk_size, summaries, window, min_chunks)
    return window, tma, gluon_band, prefix == "dense"


def chooses_dense_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int,
                         window: int) -> bool:
    """Whether :func:`ksa_prefill` with its defaults (``prefix=None``, autotuned tiles, TMA where it applies) takes
    the summary prefix from the dense call for these inputs (benchmarks label their rows with it)."""
    if q.shape[0] == 0 or q.shape[1] == 0:
        return False
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    return _plan(q, k, v, chunk_size, summaries, window, None, None, None)[3]


class _Launch:
    """One launch of the prefill kernel with fixed KSA parameters (per batch row when the prefix is dense)."""

    def __init__(self, chunk_size: int, summaries: int, window: int, scale: float, config: dict[str, int] | None,
                 tma: bool) -> None:
        self.chunk_size, self.summaries, self.window, self.scale = chunk_size, summaries, window, scale
        self.config, self.tma = config, tma

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                 given: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        b, length, heads, head_dim = q.shape
        chunk, summaries, config = self.chunk_size, self.summaries, self.config
        n_text, n_sum = split_length(length, chunk, summaries)

        def grid(meta: dict[str, int]) -> tuple[int, int]:
            return (triton.cdiv(n_text, meta["BLOCK_M"]), b * heads)

        kt, kp = chunk_descriptors(k, chunk, summaries) if self.tma else (None, None)
        vt, vp = chunk_descriptors(v, chunk, summaries) if self.tma else (None, None)
        po, pl = (lse, lse) if given is None else given  # (not read without a dense prefix)
        po_strides, pl_strides = ((0, 0, 0), (0, 0, 0)) if given is None else (po.stride()[:3], pl.stride())
        dense_chunks = 0 if given is None else po.shape[2]
        kernel = _ksa_prefill_kernel if config is None else _ksa_prefill_body
        if config is not None:
            set_boxes({"KT": kt, "VT": vt, "KP": kp, "VP": vp, "CHUNK": chunk, "SUMMARIES": summaries,
                       "HEAD_DIM": head_dim, "BLOCK_N": config.get("BLOCK_N", 16)})
        kernel[grid](
            q, k, v, out, lse, kt, vt, kp, vp, po, pl, *po_strides, *pl_strides, dense_chunks,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), lse.stride(0),
            lse.stride(1),
            heads, length, n_text, n_sum, self.window, self.scale * LOG2E, length.bit_length(),
            GROUPS=heads // k.shape[2], HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
            CHUNK=chunk, SUMMARIES=summaries, TMA=self.tma, DENSE=given is not None, **(config or {}),
        )
