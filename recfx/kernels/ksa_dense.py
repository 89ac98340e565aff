"""The KSA summary prefix as ONE dense causal attention, run by the GPU's best dense attention kernel (cuDNN).

With S = 1, a text query of chunk c sees the summaries of chunks [0, c - W) (docs/ksa.md): one
key per older chunk. Regroup the text queries by their offset p in the chunk (p becomes the batch index) and
number the chunks from the first one that has a prefix, c' = c - W - 1: query (p, c') then sees summaries
0 .. c', which is exactly top-left causal attention over a sequence of chunks, with the same keys for every p.
Both sides are strided views of the interleaved tensors (no copy): queries
``q[b, (c' + W + 1) * (k + S) + p, h]``, keys ``k[b, j * (k + S) + k, h]`` broadcast over p.

That is about two thirds of KSA's work at 32K text tokens (and more beyond), done at dense-FlashAttention speed;
the Triton kernel (``ksa_prefill``) starts every such row from the prefix's (out, lse) and adds the text band and
the summary queries. ``dense_prefix`` returns those two tensors; the kernel reads them through their strides.

On CUDA the call is cuDNN's fused attention (``aten._scaled_dot_product_cudnn_attention``, the kernel SDPA picks
on Hopper); under the Triton interpreter (CPU tests) it is ATen's CPU flash attention, so the same views, strides
and merge are tested without a GPU.
"""

from __future__ import annotations

import functools
import os

import torch

from recfx.kernels.ksa_reference import split_length

__all__ = ["dense_prefix", "dense_prefix_chunks", "dense_prefix_supported"]

#: below this many prefix chunks the Triton kernel's own prefix loop is as fast as the dense call with the band in the
#: Triton kernel (16K text tokens, 1,919 prefix chunks: the kernel alone was 4% faster; 32K, 3,967 chunks: dense
#: 1-2% faster; 64K: 6-8% faster; H200, docs/ksa.md)
MIN_PREFIX_CHUNKS = 3072
#: the same with the band in the Gluon kernel (``ksa_gluon``): at 16K dense + Gluon took 0.647 ms against 0.678 ms for
#: the Triton kernel alone (and 0.633 against 0.657 in another call); shorter texts were not timed
MIN_PREFIX_CHUNKS_GLUON = 1536


def dense_prefix_chunks(n_text: int, chunk_size: int, window: int) -> int:
    """Number of query chunks the dense call covers: the complete chunks from W + 1 on (0 if none).

    A trailing incomplete chunk is left to the kernel (its queries would run past the end of the sequence).
    """
    return max(n_text // chunk_size - window - 1, 0)


@functools.cache
def _cudnn_on(index: int | None) -> bool:
    """cuDNN present and the GPU Hopper or newer (cached: this runs on every launch)."""
    return torch.backends.cudnn.is_available() and torch.cuda.get_device_capability(index)[0] >= 9


def _cudnn_attention_available(device: torch.device) -> bool:
    return torch.backends.cuda.cudnn_sdp_enabled() and _cudnn_on(device.index)


def dense_prefix_supported(q: torch.Tensor, chunk_size: int, summaries: int, window: int,
                           min_chunks: int = MIN_PREFIX_CHUNKS) -> bool:
    """Whether ``ksa_prefill`` should take the summary prefix from :func:`dense_prefix` (``prefix=None``).

    Needs S = 1, 16-bit inputs, a head dim cuDNN takes (multiple of 8, at most 128), a Hopper-or-newer GPU with
    cuDNN attention enabled, and at least ``min_chunks`` prefix chunks. ``RECFX_KSA_PREFIX=kernel`` turns it off,
    ``=dense`` forces it wherever it can run (A/B measurements).
    """
    choice = os.environ.get("RECFX_KSA_PREFIX", "auto")
    if choice == "kernel":
        return False
    if not dense_prefix_runs(q, summaries):
        return False
    n_text, _ = split_length(q.shape[1], chunk_size, summaries)
    return dense_prefix_chunks(n_text, chunk_size, window) >= (1 if choice == "dense" else min_chunks)


def dense_prefix_runs(q: torch.Tensor, summaries: int) -> bool:
    """Whether :func:`dense_prefix` can run on ``q`` at all (whatever the sequence length)."""
    if summaries != 1 or q.dtype not in (torch.bfloat16, torch.float16) or q.shape[3] % 8 or q.shape[3] > 128:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1" and not q.is_cuda:
        return True
    return q.is_cuda and _cudnn_attention_available(q.device)


def _chunk_view(x: torch.Tensor, first: int, offset: int, chunk_size: int, chunks: int,
                group: int) -> torch.Tensor:
    """[group, heads, chunks, D] view of batch row 0: row (g, h, c) is position (first + c) * (k + 1) + offset + g."""
    _, _, heads, head_dim = x.shape
    _, sl, sh, sd = x.stride()
    block = (chunk_size + 1) * sl
    return x.as_strided((group, heads, chunks, head_dim), (sl, sh, block, sd),
                        x.storage_offset() + first * block + offset * sl)


def dense_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, window: int,
                 scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summary-prefix attention of a batch of one (q (1, L, H, D), k/v (1, L, Hkv, D), S = 1).

    Returns (out [k, H, C', D], lse [k, H, C'] float32), strided as the attention kernel chose.

    Row (p, h, c') is the text query at offset p of chunk c' + W + 1 attending to the summaries of chunks 0 .. c'
    (C' = :func:`dense_prefix_chunks`); lse is the natural log-sum-exp. GQA: the summaries' kv heads are repeated
    to the query heads (a copy of C' rows per head; the queries are never copied).
    """
    n_text = q.shape[1] - q.shape[1] // (chunk_size + 1)
    chunks = dense_prefix_chunks(n_text, chunk_size, window)
    heads, kv_heads = q.shape[2], k.shape[2]
    qv = _chunk_view(q, window + 1, 0, chunk_size, chunks, chunk_size)
    kv = [_chunk_view(x, 0, chunk_size, chunk_size, chunks, 1) for x in (k, v)]
    if heads != kv_heads:
        kv = [x.repeat_interleave(heads // kv_heads, dim=1) for x in kv]
    ks, vs = (x.expand(chunk_size, heads, chunks, q.shape[3]) for x in kv)
    if q.is_cuda:
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(qv, ks, vs, None, True, 0.0, True, False,
                                                                       scale=scale)[:2]
    else:  # the interpreter's stand-in (CPU tests of the decomposition)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qv, ks, vs, 0.0, True, scale=scale)
    return out, lse.reshape(chunk_size, heads, chunks)
