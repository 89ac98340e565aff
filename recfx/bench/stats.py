"""Summary statistics of timing samples: mean, percentiles (numpy's linear interpolation), min, max."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Statistics of ``n`` samples, in the samples' unit (milliseconds for latencies).

    Percentiles interpolate linearly between the closest ranks (numpy's default ``method="linear"``), so p50 of an
    even number of samples is the mean of the two middle ones.
    """

    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def summarize(samples: Sequence[float]) -> Stats:
    """Mean, standard deviation (population), p50/p90/p99, min and max of ``samples``.

    Args:
        samples: one number per timed iteration (at least one, all finite).

    Returns:
        A :class:`Stats`.

    Raises:
        ValueError: no samples, or a NaN/inf among them (a broken timer, never a real latency).

    Example:
        >>> s = summarize([1.0, 2.0, 3.0, 4.0])
        >>> (s.p50, s.min, s.max, s.mean)
        (2.5, 1.0, 4.0, 2.5)
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"summarize needs a non-empty 1-D sequence of samples, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"timing samples must be finite, got {[x for x in data.tolist() if not math.isfinite(x)]}")
    p50, p90, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
    return Stats(n=int(data.size), mean=float(data.mean()), std=float(data.std()), p50=p50, p90=p90, p99=p99,
                 min=float(data.min()), max=float(data.max()))
