"""ONNX forms of the ops jagged recommender code uses that torch.onnx does not translate: decompositions into
comparisons and sums (``searchsorted``, ``bucketize``), registered as built-ins by :mod:`recfx.onnx.translate`.

Each is exact (the same integers as the op) and costs one (…, values, boundaries) comparison: fine for the bucket
boundaries and offsets recommenders search (tens to thousands of entries), not for searching huge tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _count_below(boundaries: torch.Tensor, values: torch.Tensor, right: bool, out_int32: bool) -> torch.Tensor:
    """How many boundaries are < each value (``right``: <=): the insertion index into sorted boundaries.

    ``boundaries`` (M,) with ``values`` of any shape, or (..., M) with ``values`` (..., N) (one row each).
    """
    flat = boundaries.dim() == 1
    queries = values.reshape(-1) if flat else values
    keys, asked = boundaries.unsqueeze(-2), queries.unsqueeze(-1)  # (…, 1, M), (…, N, 1)
    before = keys <= asked if right else keys < asked
    counts = before.sum(-1, dtype=torch.int32 if out_int32 else torch.int64)
    return counts.reshape(values.shape) if flat else counts


def searchsorted(sorted_sequence: torch.Tensor, values: Any, *, out_int32: bool = False, right: bool = False,
                 side: str | None = None, sorter: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.searchsorted`` as a comparison count (1-D boundaries, or one row of boundaries per row of values)."""
    if sorter is not None:
        sorted_sequence = sorted_sequence.gather(-1, sorter)
    right = side == "right" if side is not None else right
    values_t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=sorted_sequence.dtype)
    return _count_below(sorted_sequence, values_t, right, out_int32)


def bucketize(values: Any, boundaries: torch.Tensor, *, out_int32: bool = False, right: bool = False) -> torch.Tensor:
    """``torch.bucketize``: the bucket of each value (``right=False``: boundaries[i-1] < x <= boundaries[i])."""
    values_t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=boundaries.dtype)
    return _count_below(boundaries, values_t, right, out_int32)


#: op name -> decomposition, every overload (Tensor and Scalar)
DECOMPOSITIONS: dict[str, Callable[..., torch.Tensor]] = {
    "aten::searchsorted": searchsorted,
    "aten::bucketize": bucketize,
}
