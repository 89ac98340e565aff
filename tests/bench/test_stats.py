"""recfx/bench/stats.py: percentiles against numpy, closed forms, bad input."""

import numpy as np
import pytest

from recfx.bench.stats import Stats, summarize


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_matches_numpy_on_random_samples(n):
    rng = np.random.default_rng(n)
    samples = rng.lognormal(mean=0.0, sigma=0.7, size=n)  # skewed, like latencies
    s = summarize(samples.tolist())
    for q, got in ((50, s.p50), (90, s.p90), (99, s.p99)):
        assert got == pytest.approx(float(np.percentile(samples, q)), rel=1e-12)
    assert s.n == n
    assert s.mean == pytest.approx(samples.mean(), rel=1e-12)
    assert s.std == pytest.approx(samples.std(), rel=1e-12, abs=1e-15)
    assert (s.min, s.max) == (samples.min(), samples.max())


def test_closed_forms():
    s = summarize(list(range(1, 101)))  # 1..100: rank r = q/100 * 99, linear interpolation
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    one = summarize([3.0])
    assert (one.p50, one.p99, one.std) == (3.0, 3.0, 0.0)


def test_order_does_not_matter():
    rng = np.random.default_rng(0)
    samples = rng.random(50)
    assert summarize(samples.tolist()) == summarize(samples[::-1].tolist())


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")]])
def test_bad_samples_raise(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_round_trips_through_dict():
    s = summarize([1.0, 2.0, 4.0])
    assert Stats.from_dict(s.to_dict()) == s
