"""recfx/analysis/numerics.py: the one definition of each output metric, checked against float64 by hand."""

import doctest
import math

import pytest
import torch

from recfx.analysis import numerics
from recfx.analysis.numerics import (
    compare_outputs,
    cosine,
    equal_fraction,
    max_abs_err,
    sqnr_db,
    sqnr_from_energies,
    topk_overlap,
)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(numerics, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_float_metrics_match_float64_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(64, generator=g)
    approx = (ref + 0.01 * torch.randn(64, generator=g)).to(torch.bfloat16)
    r, a = ref.double(), approx.double()
    assert cosine(ref, approx) == pytest.approx(float(r @ a / (r.norm() * a.norm())), abs=1e-12)
    assert sqnr_db(ref, approx) == pytest.approx(10 * math.log10(float(r.pow(2).sum() / (r - a).pow(2).sum())))
    assert max_abs_err(ref, approx) == float((r - a).abs().max())
    assert cosine(torch.zeros(3), torch.zeros(3)) == 1.0 and cosine(torch.zeros(3), torch.ones(3)) == 0.0


def test_sqnr_edges() -> None:
    assert sqnr_db(torch.ones(3), torch.ones(3)) == math.inf
    assert sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf
    assert sqnr_from_energies(1e4, 1.0) == pytest.approx(40.0)
    assert sqnr_from_energies(0.0, 0.0) == math.inf  # nothing to measure: no noise
    assert max_abs_err(torch.zeros(0), torch.zeros(0)) == 0.0 and equal_fraction(torch.zeros(0), torch.zeros(0)) == 1.0


def test_topk_overlap_divides_by_distinct_reference_results() -> None:
    # the FP8 report used to divide by k: identical answers with a repeated beam scored 2/3, not 1
    ref = torch.tensor([[1, 1, 2]])
    assert topk_overlap(ref, ref.clone()) == 1.0
    assert topk_overlap(ref, torch.tensor([[2, 1, 3]])) == 1.0
    assert topk_overlap(ref, torch.tensor([[2, 5, 3]])) == 0.5


def test_topk_overlap_first_k_results_only() -> None:
    ref = torch.tensor([[[1, 2], [3, 4], [5, 6]]])
    cand = torch.tensor([[[3, 4], [9, 9], [1, 2]]])
    assert topk_overlap(ref, cand) == pytest.approx(2 / 3)
    assert topk_overlap(ref, cand, k=1) == 0.0  # (1, 2) is not among the candidate's first result
    assert topk_overlap(ref, cand, k=2) == 0.5
    assert topk_overlap(ref, cand, k=10) == topk_overlap(ref, cand)  # clipped to K
    assert topk_overlap(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long)) == 1.0


def test_compare_outputs_per_leaf_and_bad_structure() -> None:
    checks = compare_outputs({"a": torch.ones(4), "b": torch.tensor([1, 2])},
                             {"a": torch.full((4,), 1.5), "b": torch.tensor([1, 3])})
    assert [c.name for c in checks] == ["output_0", "output_1"]
    assert checks[0].max_abs_err == 0.5 and checks[0].cosine == pytest.approx(1.0) and checks[0].exact is None
    assert checks[1].exact == 0.5 and checks[1].cosine is None
    with pytest.raises(ValueError, match="2 output tensors, compiled module 1"):
        compare_outputs((torch.ones(1), torch.ones(1)), (torch.ones(1),))
    with pytest.raises(ValueError, match="output 0: reference shape"):
        compare_outputs(torch.ones(2), torch.ones(3))
