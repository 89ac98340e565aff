"""The accuracy check of a backend against the reference: cosine, max abs error, exact match, top-k overlap.

Float outputs are compared with :func:`recfx.analysis.numerics.compare_outputs` (float64 cosine, max abs error).
Integer outputs of rank >= 2 are read as the top-k results of a recommender, one row per request: OneRec returns
items ``(B, beam, levels)``, so each request's answer is the *set* of its ``beam`` items (a tuple of semantic ids
each). The overlap (:func:`recfx.analysis.numerics.topk_overlap`) is ``|reference items ∩ candidate items|`` over the
number of distinct reference items, averaged over requests: it does not care about order, which near-ties (bf16,
FP8) legitimately change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from recfx.analysis.numerics import compare_outputs, flatten_outputs, topk_overlap


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """Worst case over the outputs: lowest cosine, largest max abs error, lowest exact-match fraction and overlap.

    ``None`` where no output has that kind (a model without integer outputs has no ``topk_overlap``).
    """

    cosine: float | None
    max_abs_err: float | None
    exact: float | None
    topk_overlap: float | None

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        parts = []
        if self.cosine is not None:
            parts.append(f"cos {self.cosine:.5f}")
        if self.max_abs_err is not None:
            parts.append(f"max|err| {self.max_abs_err:.3g}")
        if self.topk_overlap is not None:
            parts.append(f"top-k {self.topk_overlap * 100:.1f}%")
        elif self.exact is not None:
            parts.append(f"equal {self.exact * 100:.1f}%")
        return ", ".join(parts)


def check_accuracy(reference: Any, candidate: Any) -> Accuracy:
    """Compare ``candidate`` outputs (any pytree of tensors) with ``reference``'s.

    Raises:
        ValueError: the outputs differ in number or shape.

    Example:
        >>> items = torch.tensor([[[1, 2], [3, 4]]])
        >>> check_accuracy((items, torch.ones(2)), (items.flip(1), torch.ones(2))).summary()
        'cos 1.00000, max|err| 0, top-k 100.0%'
    """
    checks = compare_outputs(reference, candidate)
    cosines = [c.cosine for c in checks if c.cosine is not None]
    errors = [c.max_abs_err for c in checks if c.max_abs_err is not None]
    exact = [c.exact for c in checks if c.exact is not None]
    overlaps = [topk_overlap(r, c) for r, c in zip(flatten_outputs(reference), flatten_outputs(candidate))
                if not (r.dtype.is_floating_point or r.dtype.is_complex or r.dtype == torch.bool) and r.dim() >= 2]
    return Accuracy(cosine=min(cosines) if cosines else None, max_abs_err=max(errors) if errors else None,
                    exact=min(exact) if exact else None, topk_overlap=min(overlaps) if overlaps else None)
