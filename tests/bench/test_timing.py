"""recfx/bench/timing.py: iteration counts, the time budget, the clocks (CPU; CUDA paths are exercised on the GPU)."""

import time

import pytest
import torch

from recfx.bench.timing import (
    MIN_ITERS,
    TimingOptions,
    measure_latency,
    measure_pipelined,
    warm_up,
)

CPU = torch.device("cpu")


class Counter:
    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls = 0
        self.sleep_s = sleep_s

    def __call__(self) -> None:
        self.calls += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)


def test_runs_exactly_iters_without_budget():
    fn = Counter()
    samples = measure_latency(fn, TimingOptions(iters=7, time_budget=None), CPU)
    assert fn.calls == 7 and len(samples.wall_ms) == 7
    assert samples.device_ms is None


def test_budget_stops_early_but_not_before_min_iters():
    fn = Counter(sleep_s=0.01)
    samples = measure_latency(fn, TimingOptions(iters=1000, time_budget=0.03), CPU)
    assert fn.calls == MIN_ITERS  # 5 x 10 ms > 30 ms: the budget is spent, but never before MIN_ITERS calls
    assert len(samples.wall_ms) == fn.calls


def test_wall_clock_measures_the_call():
    samples = measure_latency(Counter(sleep_s=0.02), TimingOptions(iters=3, time_budget=None), CPU)
    assert all(19.0 <= ms < 500 for ms in samples.wall_ms)  # sleep(20 ms) never returns early


def test_pipelined_counts_calls_and_time():
    fn = Counter(sleep_s=0.005)
    result = measure_pipelined(fn, 4, CPU)
    assert fn.calls == 4 and result.calls == 4
    assert result.wall_s >= 0.019 and result.device_s is None
    with pytest.raises(ValueError):
        measure_pipelined(fn, 0, CPU)


def test_warm_up_times_the_first_call():
    fn = Counter(sleep_s=0.01)
    first_ms = warm_up(fn, 3, CPU)
    assert fn.calls == 3 and first_ms >= 9.0


@pytest.mark.parametrize("kwargs", [{"warmup": 0}, {"iters": 0}, {"time_budget": 0.0}, {"time_budget": -1.0}])
def test_bad_options_raise(kwargs):
    with pytest.raises(ValueError):
        TimingOptions(**kwargs)
