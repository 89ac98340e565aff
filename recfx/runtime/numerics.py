"""Output comparison between a compiled module and its reference: max abs error, cosine, exact-match fraction."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.utils._pytree as pytree


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """How one output of the compiled module compares with the reference.

    Float outputs get ``max_abs_err`` and ``cosine`` (computed in float64 over the flattened tensor); integer and
    bool outputs (ids, indices) get ``exact`` (fraction of equal elements).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    max_abs_err: float | None = None
    cosine: float | None = None
    exact: float | None = None

    def summary(self) -> str:
        if self.exact is not None:
            return f"{self.name}: {self.exact * 100:.2f}% equal"
        return f"{self.name}: max|err| {self.max_abs_err:.3g}, cosine {self.cosine:.6f}"


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened, in float64 (1.0 for two all-zero tensors)."""
    a64, b64 = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = a64.norm(), b64.norm()
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float((a64 @ b64) / (na * nb))


def compare_outputs(reference: Any, candidate: Any) -> list[OutputCheck]:
    """Compare two (nested) outputs leaf by leaf.

    Raises:
        ValueError: different numbers of tensors or different shapes.
    """
    ref, cand = flatten_outputs(reference), flatten_outputs(candidate)
    if len(ref) != len(cand):
        raise ValueError(f"reference has {len(ref)} output tensors, compiled module {len(cand)}")
    checks = []
    for i, (r, c) in enumerate(zip(ref, cand)):
        if r.shape != c.shape:
            raise ValueError(f"output {i}: reference shape {tuple(r.shape)}, compiled {tuple(c.shape)}")
        name, shape = f"output_{i}", tuple(r.shape)
        if r.dtype.is_floating_point or r.dtype.is_complex:
            r64, c64 = r.detach().double(), c.detach().double().to(r.device)
            err = float((r64 - c64).abs().max()) if r.numel() else 0.0
            checks.append(OutputCheck(name, str(r.dtype).removeprefix("torch."), shape,
                                      max_abs_err=err, cosine=cosine(r64, c64)))
        else:
            same = float((r == c.to(r.device)).double().mean()) if r.numel() else 1.0
            checks.append(OutputCheck(name, str(r.dtype).removeprefix("torch."), shape, exact=same))
    return checks
