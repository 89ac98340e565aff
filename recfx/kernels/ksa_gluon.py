"""The KSA text band as a Gluon kernel for Hopper: where it runs, its configuration and its launch.

With the summary prefix taken from one dense attention (``ksa_dense.py``, cuDNN), what is left of a text row's work
is its text band: the whole text of the W previous chunks and its own chunk causally, about W*k + 1 keys. The
Triton kernel (``ksa_prefill.py``) walks it at about 300 useful TFLOP/s at 32K text tokens: Triton's pipeliner
neither hides the K/V loads nor overlaps the softmax with the tensor cores (docs/ksa.md). The Gluon kernel
(``ksa_gluon_kernel.py``: persistent, warp-specialised, FlashAttention-3 style) schedules both by hand.

Scope (``band_supported``): S = 1, every chunk complete with its summary (L a multiple of k + 1), k = 4 or 8
(``VALIDATED_CHUNKS``), bf16/fp16 q, k and v alike, head dim 64 or 128, heads a multiple of the kv heads, Hopper
(sm90), 16-byte aligned non-zero strides, and by default a Triton release it was validated on
(``VALIDATED_TRITON``). Measurements and the designs that lost: docs/ksa.md.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
import triton

from recfx.kernels import ksa_gluon_kernel as kernel
from recfx.kernels import ksa_tma

__all__ = ["band_supported", "ksa_band", "parse_config"]

#: the Gluon module, None on a Triton without it (then the Triton kernel runs the band)
gluon = kernel.gluon
LOG2E = math.log2(math.e)
#: text rows per row tile: two consumer warpgroups of 64 rows
BLOCK_M = 128
#: (BLOCK_N, STAGES, Q_BUFS, BALANCED, SUMMARY_SMEM): keys per tile, K/V ring depth, Q ring depth, row
#: tiles dealt to the CTAs by cost (``_tile_id``) rather than round robin, summary queries computed from the
#: shared-memory tiles (``_summary_from_tiles``, BLOCK_N = BLOCK_M and where the packs fit) rather than from L2.
#: Measurements, and the variants that lost: docs/ksa.md.
#: RECFX_KSA_GLUON_CONFIG="bn,stages[,q_bufs[,balanced[,smem]]]" overrides (sweeps)
DEFAULT_CONFIG = (128, 2, 2, True, True)
#: Triton releases on which the kernel was checked against float64 and timed on an H200; on others (it also builds
#: with 3.9) it runs only when asked for with RECFX_KSA_BAND=gluon
VALIDATED_TRITON = ("3.6.",)


#: chunk sizes the kernel was checked with on the GPU (k = 8 is the spec's default); others keep the Triton kernel
VALIDATED_CHUNKS = (4, 8)
#: chunk sizes whose summary queries were checked in the shared-memory form (SUMMARY_SMEM); k = 4 reads L2 (its packs
#: are twice as large and, with D = 128, do not fit beside the rings)
SMEM_SUMMARY_CHUNKS = (8,)


def band_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int) -> bool:
    """Whether :func:`ksa_band` runs these inputs (see the module docstring for the conditions).

    ``RECFX_KSA_BAND``: ``auto`` (default) uses it on the validated Triton releases, ``gluon`` on any Triton with
    Gluon, ``triton`` never (A/B measurements).

    Raises:
        ValueError: ``RECFX_KSA_BAND`` is set to something else, or ``RECFX_KSA_GLUON_CONFIG`` is malformed.
    """
    choice = os.environ.get("RECFX_KSA_BAND", "auto")
    if choice not in ("auto", "gluon", "triton"):
        raise ValueError(f"RECFX_KSA_BAND must be auto, gluon or triton, got {choice!r}")
    if gluon is None or choice == "triton" or not q.is_cuda:
        return False
    if choice == "auto" and not triton.__version__.startswith(VALIDATED_TRITON):
        return False
    length, heads, head_dim = q.shape[1], q.shape[2], q.shape[3]
    return (summaries == 1 and chunk_size in VALIDATED_CHUNKS and _config()[0] % chunk_size == 0
            and length % (chunk_size + 1) == 0 and head_dim in (64, 128) and heads % k.shape[2] == 0
            and ksa_tma._capability(q.device.index)[0] == 9 and k.dtype == q.dtype and v.dtype == q.dtype
            and k.shape == v.shape and all(ksa_tma.tma_supported(x, chunk_size, summaries) for x in (q, k, v)))


@functools.cache
def _sm_count(index: int | None) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _config() -> tuple[int, int, int, bool, bool]:
    """(BLOCK_N, STAGES, Q_BUFS, BALANCED, SUMMARY_SMEM): DEFAULT_CONFIG, or RECFX_KSA_GLUON_CONFIG (A/B sweeps)."""
    text = os.environ.get("RECFX_KSA_GLUON_CONFIG")
    return _parse_env_config(text) if text else DEFAULT_CONFIG


@functools.lru_cache(maxsize=8)
def _parse_env_config(text: str) -> tuple[int, int, int, bool, bool]:
    """``parse_config`` of the environment variable, once per value (this runs on every launch)."""
    return parse_config(text, "RECFX_KSA_GLUON_CONFIG")


def parse_config(text: str, source: str = "config") -> tuple[int, int, int, bool, bool]:
    """``bn,stages[,q_bufs[,balanced[,smem]]]`` (omitted ones from DEFAULT_CONFIG) -> (BLOCK_N, STAGES, Q_BUFS,
    BALANCED, SUMMARY_SMEM): BLOCK_N a power of two from 16 to 256, STAGES and Q_BUFS from 1 to 4, the switches 0 or
    1; SUMMARY_SMEM is dropped unless BLOCK_N = BLOCK_M.

    Raises:
        ValueError: the text is not of that form (the message names ``source``, e.g. the environment variable).
    """
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    block_n, stages, q_bufs, balanced, smem = (values + list(DEFAULT_CONFIG[len(values):]))[:5]
    if (not 2 <= len(values) <= 5 or block_n not in (16, 32, 64, 128, 256) or not 1 <= stages <= 4
            or not 1 <= q_bufs <= 4 or any(flag not in (0, 1) for flag in (balanced, smem))):
        raise ValueError(f"{source} wants bn,stages[,q_bufs[,balanced[,smem]]]: bn a power of two from 16 to 256, "
                         f"stages and q_bufs 1 to 4, balanced and smem 0 or 1 (e.g. 128,2), got {text!r}")
    return block_n, stages, q_bufs, bool(balanced), bool(smem) and block_n == BLOCK_M


def _text_descriptor(x: torch.Tensor, chunk_size: int, rows: int) -> Any:
    """[B, H, chunks, k, D] over the text rows of ``x`` (B, L, H, D) with S = 1; box: ``rows`` text rows of one head."""
    b, length, heads, head_dim = x.shape
    sb, sl, sh, _ = x.stride()
    shape = [b, heads, length // (chunk_size + 1), chunk_size, head_dim]
    block = [1, 1, rows // chunk_size, chunk_size, head_dim]
    return kernel.TensorDescriptor(x, shape, [sb, sh, (chunk_size + 1) * sl, sl, 1], block, _smem_layout(x, 5))


def _smem_layout(x: torch.Tensor, rank: int) -> Any:
    """Shared-memory layout of a TMA box of ``x``'s rows (wgmma-ready swizzle: 128 B, or 64 B for short rows)."""
    return _nvmma_layout(128 if x.shape[-1] * x.element_size() >= 128 else 64, x.element_size() * 8, rank)


@functools.cache
def _nvmma_layout(swizzle: int, bits: int, rank: int) -> Any:
    """One (immutable) layout object per kind: building one costs ~10 us of host time, and a launch needs seven."""
    return kernel.gl.NVMMASharedLayout(swizzle_byte_width=swizzle, element_bitwidth=bits, rank=rank)


#: shared memory per CTA on Hopper (bytes), and what the kernel's barriers and layout padding take beside its rings
SHARED_LIMIT = 227 * 1024
_SHARED_SLACK = 1024


def _shared_bytes(block_n: int, stages: int, q_bufs: int, summary_smem: bool, chunk_size: int, head_dim: int,
                  element_size: int) -> int:
    """Shared memory of ``_band_kernel``: the Q ring, the K and V rings, the summary packs (an upper bound)."""
    rows = q_bufs * BLOCK_M + 2 * stages * block_n + (3 * q_bufs * BLOCK_M // chunk_size if summary_smem else 0)
    return rows * head_dim * element_size + _SHARED_SLACK


def _summary_descriptor(x: torch.Tensor, chunk_size: int, rows: int) -> Any:
    """[B, H, chunks, D] over the summary rows of ``x`` (B, L, H, D) with S = 1; box: those of ``rows`` text rows."""
    b, length, heads, head_dim = x.shape
    sb, sl, sh, _ = x.stride()
    return kernel.TensorDescriptor(x[:, chunk_size:], [b, heads, length // (chunk_size + 1), head_dim],
                            [sb, sh, (chunk_size + 1) * sl, 1], [1, 1, rows // chunk_size, head_dim],
                            _smem_layout(x, 4))


def ksa_band(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
             prefix: tuple[torch.Tensor, torch.Tensor], chunk_size: int, window: int, scale: float) -> None:
    """Text rows and summary rows of one batch row (B = 1 views) into out / lse, the text rows started from the
    dense prefix: ``ksa_dense.dense_prefix``'s (out [k, H, C', D], lse [k, H, C']) for this row. ``out`` is laid
    out like ``q`` (its text rows are written by TMA; ``ksa_prefill`` allocates it so)."""
    _, length, heads, head_dim = q.shape
    n_text = length - length // (chunk_size + 1)
    block_n, stages, q_bufs, balanced, summary_smem = _config()
    summary_smem = (summary_smem and chunk_size in SMEM_SUMMARY_CHUNKS
                    and _shared_bytes(block_n, stages, q_bufs, True, chunk_size, head_dim, q.element_size())
                    <= SHARED_LIMIT)
    po, pl = prefix
    n_row_tiles = -(-n_text // BLOCK_M)
    total = n_row_tiles * q.shape[0] * heads
    kernel._band_kernel[(min(total, _sm_count(q.device.index)),)](
        _text_descriptor(q, chunk_size, BLOCK_M), _text_descriptor(k, chunk_size, block_n),
        _text_descriptor(v, chunk_size, block_n), *(_summary_descriptor(x, chunk_size, BLOCK_M) for x in (q, k, v)),
        _text_descriptor(out, chunk_size, BLOCK_M // 2),
        q, k, v, out, lse, po, pl, *po.stride()[:3], *pl.stride(), po.shape[2],
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), lse.stride(0),
        lse.stride(1), n_row_tiles, min(n_row_tiles, -(-window * chunk_size // BLOCK_M)), total, heads, n_text,
        window, scale * LOG2E,
        GROUPS=heads // k.shape[2], HEAD_DIM=head_dim, CHUNK=chunk_size, BLOCK_M=BLOCK_M, BLOCK_N=block_n,
        STAGES=stages, Q_BUFS=q_bufs, BALANCED=balanced, SUMMARY_SMEM=summary_smem, num_warps=4)

