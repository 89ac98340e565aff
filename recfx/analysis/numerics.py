"""The output metrics of recfx, one definition each: cosine, SQNR, max abs error, equal fraction, top-k overlap.

Everything here computes in float64 and imports only torch, so that every layer can judge numbers the same way:
the FP8 passes (per-layer SQNR, model-level error), ``recfx.compile``'s numerical check (:func:`compare_outputs`),
the benchmark's accuracy columns and the tests.

    >>> ref = torch.tensor([1.0, 2.0, 2.0])
    >>> round(cosine(ref, 2 * ref), 12), max_abs_err(ref, ref + 0.5), round(sqnr_db(ref, ref * 1.1), 1)
    (1.0, 0.5, 20.0)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.utils._pytree as pytree


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened, in float64 (1.0 for two all-zero tensors, 0.0 for one)."""
    a64, b64 = a.detach().double().flatten(), b.detach().double().flatten().to(a.device)
    na, nb = a64.norm(), b64.norm()
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float((a64 @ b64) / (na * nb))


def sqnr_from_energies(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` in dB from summed squares: ``inf`` without noise, ``-inf`` without signal.

    For errors accumulated over batches (``signal = sum ref^2``, ``noise = sum (ref - approx)^2``).

        >>> sqnr_from_energies(100.0, 1.0), sqnr_from_energies(1.0, 0.0), sqnr_from_energies(0.0, 1.0)
        (20.0, inf, -inf)
    """
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB, in float64: ``10 log10(sum ref^2 / sum (ref - approx)^2)``.

    Example:
        >>> round(sqnr_db(torch.ones(4), torch.full((4,), 1.1)), 1)
        20.0
    """
    ref = reference.detach().double()
    noise = (ref - approx.detach().double().to(ref.device)).pow(2).sum()
    return sqnr_from_energies(float(ref.pow(2).sum()), float(noise))


def max_abs_err(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """The largest ``|reference - candidate|`` over all elements, in float64 (0.0 for empty tensors)."""
    if reference.numel() == 0:
        return 0.0
    ref = reference.detach().double()
    return float((ref - candidate.detach().double().to(ref.device)).abs().max())


def equal_fraction(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """The fraction of elements that are equal (1.0 for empty tensors); for ids, indices and flags."""
    if reference.numel() == 0:
        return 1.0
    return float((reference == candidate.to(reference.device)).double().mean())


def topk_overlap(reference: torch.Tensor, candidate: torch.Tensor, k: int | None = None) -> float:
    """Mean over requests (dim 0) of the fraction of the reference's results that the candidate also returns.

    Entry ``[b, j]`` (a scalar, or the tuple of dims 2..) is result ``j`` of request ``b``; only the first ``k``
    results of each (default: all of dim 1) count. Per request the overlap is
    ``|set(reference results) ∩ set(candidate results)| / |set(reference results)|``: it divides by the number of
    *distinct* reference results (``k`` when they are distinct), ignores order (near-ties in bf16 or FP8 reorder
    legitimately), and is 1.0 for identical answers.

    Args:
        reference / candidate: integer tensors of one shape ``(B, K)`` or ``(B, K, ...)``.
        k: how many leading results of each request to compare (clipped to ``K``).

    Returns:
        A fraction in [0, 1] (1.0 when there is no request or no result).

    Raises:
        ValueError: the shapes differ or the rank is below 2.

    Example:
        >>> ref = torch.tensor([[[1, 2], [3, 4]]])  # one request, results (1, 2) and (3, 4)
        >>> topk_overlap(ref, torch.tensor([[[3, 4], [1, 2]]])), topk_overlap(ref, torch.tensor([[[3, 4], [5, 6]]]))
        (1.0, 0.5)
        >>> topk_overlap(ref, torch.tensor([[[1, 2], [5, 6]]]), k=1)
        1.0
    """
    if reference.shape != candidate.shape or reference.dim() < 2:
        raise ValueError(f"topk_overlap needs two tensors of the same shape (B, K, ...), got "
                         f"{tuple(reference.shape)} and {tuple(candidate.shape)}")
    b, k = reference.shape[0], min(k or reference.shape[1], reference.shape[1])
    if b == 0 or k == 0:
        return 1.0
    ref_rows = reference.detach().cpu()[:, :k].reshape(b, k, -1).tolist()
    cand_rows = candidate.detach().cpu()[:, :k].reshape(b, k, -1).tolist()
    total = 0.0
    for ref_req, cand_req in zip(ref_rows, cand_rows):
        ref_set = {tuple(item) for item in ref_req}
        total += len(ref_set & {tuple(item) for item in cand_req}) / len(ref_set)
    return total / b


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
    """The tensors of a (nested) output, in pytree order."""
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def compare_outputs(reference: Any, candidate: Any) -> list[OutputCheck]:
    """Compare two (nested) outputs leaf by leaf.

    Raises:
        ValueError: different numbers of tensors or different shapes.

    Example:
        >>> compare_outputs((torch.ones(2), torch.tensor([1, 2])), (torch.ones(2), torch.tensor([1, 3])))[1].exact
        0.5
    """
    ref, cand = flatten_outputs(reference), flatten_outputs(candidate)
    if len(ref) != len(cand):
        raise ValueError(f"reference has {len(ref)} output tensors, compiled module {len(cand)}")
    checks = []
    for i, (r, c) in enumerate(zip(ref, cand)):
        if r.shape != c.shape:
            raise ValueError(f"output {i}: reference shape {tuple(r.shape)}, compiled {tuple(c.shape)}")
        name, shape, dtype = f"output_{i}", tuple(r.shape), str(r.dtype).removeprefix("torch.")
        if r.dtype.is_floating_point or r.dtype.is_complex:
            checks.append(OutputCheck(name, dtype, shape, max_abs_err=max_abs_err(r, c), cosine=cosine(r, c)))
        else:
            checks.append(OutputCheck(name, dtype, shape, exact=equal_fraction(r, c)))
    return checks
