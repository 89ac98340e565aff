"""recfx/bench/compare.py: a fake slowdown is caught, equal runs pass, failures count, mismatched runs refuse."""

import copy
import dataclasses

import pytest

from recfx.bench.compare import compare_results


def _slower(result, factor, backend="eager", batch=4, metric="p50"):
    slow = copy.deepcopy(result)
    for row in slow.rows:
        if row.backend == backend and row.batch == batch:
            if metric == "p50":
                row.latency_ms = dataclasses.replace(row.latency_ms, p50=row.latency_ms.p50 * factor)
            else:
                row.throughput_rps /= factor
    return slow


def test_equal_runs_pass(dlrm_result):
    comparison = compare_results(dlrm_result, copy.deepcopy(dlrm_result), threshold=0.0)
    assert comparison.ok and len(comparison.deltas) == 4  # 2 shapes x (p50, throughput)
    assert not comparison.only_new and not comparison.only_old


@pytest.mark.parametrize("metric", ["p50", "throughput"])
def test_a_fake_slowdown_is_caught(dlrm_result, metric):
    comparison = compare_results(dlrm_result, _slower(dlrm_result, 1.5, metric=metric), threshold=0.1)
    assert not comparison.ok
    (reg,) = comparison.regressions
    assert reg.key == ("eager", 4, None, None, False) and reg.metric == metric
    assert reg.ratio == pytest.approx(1.5)
    assert "+50.0% slower" in reg.describe() and "REGRESSION" in comparison.render()


def test_slowdown_within_threshold_and_speedups_pass(dlrm_result):
    assert compare_results(dlrm_result, _slower(dlrm_result, 1.05), threshold=0.1).ok
    assert compare_results(dlrm_result, _slower(dlrm_result, 0.5), threshold=0.0).ok
    assert not compare_results(dlrm_result, _slower(dlrm_result, 1.05), threshold=0.01).ok


def test_a_backend_that_now_fails_is_a_regression(dlrm_result):
    now = copy.deepcopy(dlrm_result)
    now.rows[1].status, now.rows[1].reason = "failed", "RuntimeError: oops"
    comparison = compare_results(dlrm_result, now)
    assert [d.metric for d in comparison.regressions] == ["status"]
    assert "oops" in comparison.regressions[0].describe()


def test_a_backend_that_now_fails_to_compile_is_a_regression(dlrm_result):
    from recfx.bench.results import BenchRow

    now = copy.deepcopy(dlrm_result)
    now.rows = [r for r in now.rows if r.backend != "eager"]
    now.rows.append(BenchRow("eager", "eager", "failed", "compile failed: boom"))
    comparison = compare_results(dlrm_result, now)
    assert len(comparison.regressions) == 2 and "boom" in comparison.regressions[0].describe()


def test_rows_only_on_one_side_are_listed_not_failed(dlrm_result):
    fewer = copy.deepcopy(dlrm_result)
    fewer.rows = [r for r in fewer.rows if r.batch != 4]
    comparison = compare_results(dlrm_result, fewer)
    assert comparison.ok and comparison.only_old == [("eager", 4, None, None, False)]
    assert compare_results(fewer, dlrm_result).only_new == [("eager", 4, None, None, False)]


def test_refuses_to_compare_different_runs(dlrm_result):
    other = copy.deepcopy(dlrm_result)
    other.model = "onerec-tiny"
    with pytest.raises(ValueError, match="different models"):
        compare_results(dlrm_result, other)
    with pytest.raises(ValueError, match="threshold"):
        compare_results(dlrm_result, dlrm_result, threshold=-0.1)
    with pytest.raises(ValueError, match="metrics"):
        compare_results(dlrm_result, dlrm_result, metrics=("p42",))
