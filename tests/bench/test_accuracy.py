"""recfx/bench/accuracy.py: top-k overlap of recommender outputs, worst case over outputs."""

import pytest
import torch

from recfx.analysis.numerics import topk_overlap
from recfx.bench.accuracy import check_accuracy


def test_topk_overlap_ignores_order_and_counts_per_request():
    items = torch.randint(0, 100, (3, 8, 3))
    shuffled = items[:, torch.randperm(8)]
    assert topk_overlap(items, shuffled) == 1.0
    changed = items.clone()
    changed[0, :2] = -1  # request 0 loses 2 of its 8 items (the -1 rows are not in the reference)
    changed[2, 0] = -1  # request 2 loses 1
    assert topk_overlap(items, changed) == pytest.approx((6 / 8 + 1 + 7 / 8) / 3)


def test_topk_overlap_compares_whole_tuples():
    ref = torch.tensor([[[1, 2, 3], [4, 5, 6]]])
    same_ids_other_tuples = torch.tensor([[[1, 2, 6], [4, 5, 3]]])
    assert topk_overlap(ref, same_ids_other_tuples) == 0.0
    assert topk_overlap(torch.tensor([[1, 2, 3]]), torch.tensor([[3, 9, 1]])) == pytest.approx(2 / 3)


def test_topk_overlap_rejects_bad_shapes():
    with pytest.raises(ValueError):
        topk_overlap(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        topk_overlap(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


def test_check_accuracy_reports_the_worst_output():
    items = torch.randint(0, 50, (2, 4, 3))
    scores, other = torch.randn(2, 4), torch.randn(2, 5)
    exact = check_accuracy((items, scores, other), (items.clone(), scores.clone(), other.clone()))
    assert exact.cosine == pytest.approx(1.0) and exact.max_abs_err == 0.0
    assert exact.topk_overlap == 1.0 and exact.exact == 1.0

    noisy_other = other + 0.5 * torch.randn_like(other)
    moved = items.clone()
    moved[1, 0] = -1
    worse = check_accuracy((items, scores, other), (moved, scores, noisy_other))
    assert worse.cosine < 0.99  # the noisy output decides, not the exact one
    assert worse.max_abs_err == pytest.approx(float((noisy_other - other).abs().max()))
    assert worse.topk_overlap == pytest.approx((1 + 3 / 4) / 2)
    assert "top-k" in worse.summary()


def test_check_accuracy_of_float_only_model_has_no_topk():
    out = torch.randn(4, 1)
    acc = check_accuracy(out, out * 1.001)
    assert acc.topk_overlap is None and acc.exact is None
    assert acc.cosine == pytest.approx(1.0, abs=1e-9) and acc.max_abs_err > 0
