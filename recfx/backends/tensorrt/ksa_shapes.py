"""The KSA plugin's shape and type function, written once for integer shapes and TensorRT's shape expressions.

``recfx::ksa_attention(q (B, L, H, D), k, v (B, L, Hkv, D)) -> (out (B, L, H, D), lse (B, H, L))``. TensorRT has
no float64, so ``lse`` is float32 for every input dtype the plugin takes; ``out`` has q's dtype.

Example:
    >>> ksa_output_shapes((2, 10, 4, 8), (2, 10, 2, 8), (2, 10, 2, 8))
    ((2, 10, 4, 8), (2, 4, 10))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

#: Input dtypes the plugin takes; the Triton kernel runs bf16 / fp16, float32 runs the reference.
PLUGIN_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LSE_DTYPE = torch.float32

D = TypeVar("D")


def ksa_output_shapes(q: Sequence[D], k: Sequence[D], v: Sequence[D]) -> tuple[tuple[D, ...], tuple[D, ...]]:
    """``(out shape, lse shape)`` from the input shapes; dims may be ints or symbolic expressions.

    Integer shapes are checked (rank 4, k and v alike, same B / L / D as q, H a multiple of Hkv).

    Raises:
        ValueError: integer shapes that do not fit (the message names the tensor and dim).
    """
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        raise ValueError(f"KsaAttention: q, k, v must be rank 4 (B, L, H, D), got ranks {len(q)}, {len(k)}, {len(v)}")
    if all(isinstance(d, int) for d in (*q, *k, *v)):
        _check_ints(tuple(int(d) for d in q), tuple(int(d) for d in k), tuple(int(d) for d in v))  # type: ignore[call-overload]
    b, length, heads, _ = q
    return tuple(q), (b, heads, length)


def _check_ints(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> None:
    if tuple(k) != tuple(v):
        raise ValueError(f"KsaAttention: k and v must have the same shape, got {list(k)} and {list(v)}")
    for dim, name in ((0, "B"), (1, "L"), (3, "D")):
        if q[dim] != k[dim]:
            raise ValueError(f"KsaAttention: q and k differ in {name} (dim {dim}): {q[dim]} vs {k[dim]}")
    if k[2] < 1 or q[2] % k[2]:
        raise ValueError(f"KsaAttention: q's heads ({q[2]}) must be a multiple of k's ({k[2]})")


def ksa_output_dtypes(q: torch.dtype, k: torch.dtype, v: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    """``(out dtype, lse dtype)``.

    Raises:
        TypeError: mixed input dtypes or one the plugin does not take.
    """
    if not q == k == v:
        raise TypeError(f"KsaAttention: q, k, v must share a dtype, got {q}, {k}, {v}")
    if q not in PLUGIN_DTYPES:
        raise TypeError(f"KsaAttention: the TensorRT plugin takes {[str(d) for d in PLUGIN_DTYPES]}, got {q}")
    return q, LSE_DTYPE
