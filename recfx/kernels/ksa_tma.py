"""Host-side TMA descriptors of KSA keys/values: keys grouped by whole chunks of the interleaved layout.

K/V are [B, L, Hkv, D] with text chunks of k rows each followed by S summary rows. A descriptor over the text is
rank 5 [B, Hkv, chunks, k, D] whose chunk stride skips the summaries; the summary prefix is [B, Hkv, chunks, D]
(rank 4, S = 1) or [B, Hkv, chunks, S, D] starting at row k. A tile of BLOCK_N keys is a box of BLOCK_N // group
whole groups, reshaped to [BLOCK_N, D] in the kernel (``ksa_tiles.attend_tma``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # triton < 3.4: no host-side TMA descriptors, pointer loads only
    TensorDescriptor = None

__all__ = ["box", "chunk_descriptors", "set_boxes", "tma_supported"]


def box(rank: int, block_n: int, group: int, head_dim: int) -> list[int]:
    """TMA box of one tile of ``block_n`` keys: whole groups of ``group`` rows of one (batch, kv head)."""
    return [1, 1, block_n, head_dim] if rank == 4 else [1, 1, block_n // group, group, head_dim]


def set_boxes(nargs: dict) -> None:
    """Autotune pre-hook: the descriptors' boxes follow the config's BLOCK_N."""
    for name, group in (("KT", nargs["CHUNK"]), ("VT", nargs["CHUNK"]), ("KP", nargs["SUMMARIES"]),
                        ("VP", nargs["SUMMARIES"])):
        desc = nargs.get(name)
        if desc is not None:
            desc.block_shape = box(len(desc.shape), nargs["BLOCK_N"], group, nargs["HEAD_DIM"])


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@functools.cache
def _capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def tma_supported(x: torch.Tensor, chunk_size: int, summaries: int) -> bool:
    """Whether K/V tiles of ``x`` (B, L, Hkv, D) can be read by TMA descriptors in groups of whole chunks.

    Needs a Hopper-or-newer GPU (or the interpreter), 16-bit elements, power-of-two chunk, summary count and head
    dim (TMA boxes and Triton tiles are powers of two), 16-byte aligned base and non-zero strides (a broadcast
    dimension has none to describe), and at least one complete
    chunk. ``RECFX_KSA_TMA=0`` turns it off (A/B measurements).
    """
    if os.environ.get("RECFX_KSA_TMA", "1") == "0" or TensorDescriptor is None:
        return False
    if os.environ.get("TRITON_INTERPRET") != "1" and not (x.is_cuda and _capability(x.device.index)[0] >= 9):
        return False
    length, head_dim = x.shape[1], x.shape[3]
    item = x.element_size()
    return (x.dtype in (torch.bfloat16, torch.float16) and _is_pow2(chunk_size) and _is_pow2(summaries)
            and chunk_size <= 64 and summaries <= 64 and _is_pow2(head_dim) and head_dim * item >= 16
            and x.stride(-1) == 1 and x.data_ptr() % 16 == 0 and length >= chunk_size + summaries
            and all(st > 0 and st * item % 16 == 0 for st in x.stride()[:-1]))


def chunk_descriptors(x: torch.Tensor, chunk_size: int, summaries: int) -> tuple[Any, Any]:
    """(text, summary prefix) descriptors of ``x`` (B, L, Hkv, D): keys grouped by chunk, boxes set per config.

    Text: [B, Hkv, chunks, k, D] over the first k rows of every block; prefix: [B, Hkv, chunks, S, D] over the S
    rows after them (rank 4 when the group is one row). Only complete blocks are described.
    """
    b, length, kv_heads, head_dim = x.shape
    blocks = length // (chunk_size + summaries)
    sb, sl, sh, _ = x.stride()
    group_stride = (chunk_size + summaries) * sl

    def described(base: torch.Tensor, group: int) -> Any:
        if group == 1:
            shape, strides = [b, kv_heads, blocks, head_dim], [sb, sh, group_stride, 1]
        else:
            shape, strides = [b, kv_heads, blocks, group, head_dim], [sb, sh, group_stride, sl, 1]
        return TensorDescriptor(base, shape, strides, box(len(shape), 16, group, head_dim))

    prefix_base = x.as_strided((1,), (1,), x.storage_offset() + chunk_size * sl)  # first summary row
    return described(x, chunk_size), described(prefix_base, summaries)
