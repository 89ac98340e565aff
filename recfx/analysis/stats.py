"""Distribution statistics of weights and activations: variance, abs max, abs p99, kurtosis, and a running form.

Kurtosis is Pearson's (``E[(x - mean)^4] / var^2``): 3 for a Gaussian, larger for heavy tails (outlier channels).
"""

from __future__ import annotations

import dataclasses
import math

import torch

#: Bins of the running |x| histogram (the calibrators' resolution is abs max / NUM_BINS at worst / 2).
NUM_BINS = 2048


@dataclasses.dataclass(frozen=True)
class DistStats:
    """Summary statistics of one tensor (or of everything an observer saw).

    Attributes:
        count: number of values.
        variance: population variance.
        abs_max: largest |x|.
        abs_p99: 99th percentile of |x|.
        kurtosis: Pearson kurtosis (3 for a Gaussian).
    """

    count: int
    variance: float
    abs_max: float
    abs_p99: float
    kurtosis: float

    @property
    def max_over_p99(self) -> float:
        """How far the largest value sits above the bulk: large for outlier channels."""
        return self.abs_max / self.abs_p99 if self.abs_p99 > 0 else math.inf if self.abs_max > 0 else 1.0

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "max_over_p99": self.max_over_p99}


def tensor_stats(t: torch.Tensor) -> DistStats:
    """Exact statistics of a tensor (computed in float64).

    Example:
        >>> s = tensor_stats(torch.tensor([1.0, -1.0, 1.0, -1.0]))
        >>> s.variance, s.abs_max, s.kurtosis
        (1.0, 1.0, 1.0)
    """
    x = t.detach().double().flatten()
    n = x.numel()
    if n == 0:
        return DistStats(0, 0.0, 0.0, 0.0, 0.0)
    centered = x - x.mean()
    var = float(centered.pow(2).mean())
    kurt = float(centered.pow(4).mean() / var**2) if var > 0 else 0.0
    a = x.abs()
    k = max(1, math.ceil(0.99 * n))
    # CUDA's kthvalue selects within one thread block per slice (seconds for a whole weight); its radix sort is fast
    p99 = float(a.sort().values[k - 1] if a.is_cuda else a.kthvalue(k).values)
    return DistStats(n, var, float(a.max()), p99, kurt)


class RunningStats:
    """Statistics over many batches without keeping them: moments, abs max and an |x| histogram.

    The histogram covers ``[0, hi]`` in :data:`NUM_BINS` bins; when a batch exceeds ``hi`` the range doubles (bins
    merge pairwise, exactly) until it fits, so the bin width stays within a factor 2 of ``abs_max / NUM_BINS``.
    """

    def __init__(self, bins: int = NUM_BINS) -> None:
        self.bins = bins
        self.count = 0
        self.shift: float | None = None  # moments are taken around the first batch's mean, for accuracy
        self.sums = torch.zeros(4, dtype=torch.float64)  # sum of (x - shift)^1..4
        self.abs_max = 0.0
        self.hi = 0.0
        self.hist = torch.zeros(bins, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of values (any shape, any float dtype, any device)."""
        x = x.detach().flatten()
        if x.numel() == 0:
            return
        x64 = x.double()
        if self.shift is None:
            self.shift = float(x64.mean())
        c = x64 - self.shift
        powers = torch.stack([c.sum(), c.pow(2).sum(), c.pow(3).sum(), c.pow(4).sum()]).cpu()
        self.sums += powers
        self.count += x.numel()
        a = x.abs().float()
        amax = float(a.max())
        self.abs_max = max(self.abs_max, amax)
        self._grow(amax)
        self.hist += torch.histc(a, bins=self.bins, min=0.0, max=self.hi).double().cpu()

    def _grow(self, amax: float) -> None:
        if self.hi == 0.0:
            self.hi = amax if amax > 0 else 1.0
            return
        while amax > self.hi:
            self.hist = self.hist.view(-1, 2).sum(dim=1)  # merge bin pairs: exact
            self.hist = torch.cat([self.hist, torch.zeros(self.bins // 2, dtype=torch.float64)])
            self.hi *= 2

    @property
    def bin_width(self) -> float:
        return self.hi / self.bins

    def bin_centers(self) -> torch.Tensor:
        return (torch.arange(self.bins, dtype=torch.float64) + 0.5) * self.bin_width

    def abs_percentile(self, p: float) -> float:
        """The p-th percentile of |x| from the histogram: the upper edge of the bin where the CDF reaches p."""
        if self.count == 0:
            return 0.0
        cum = self.hist.cumsum(0)
        target = torch.tensor(p / 100.0 * float(cum[-1]) * (1 - 1e-12), dtype=torch.float64)  # rounding-safe
        i = int(torch.searchsorted(cum, target))
        return min((min(i, self.bins - 1) + 1) * self.bin_width, self.abs_max)

    def stats(self) -> DistStats:
        """The summary so far (variance and kurtosis from the moments, p99 from the histogram)."""
        n = self.count
        if n == 0:
            return DistStats(0, 0.0, 0.0, 0.0, 0.0)
        m1, m2, m3, m4 = (float(s) / n for s in self.sums)
        var = m2 - m1 * m1
        central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
        kurt = central4 / var**2 if var > 0 else 0.0
        return DistStats(n, max(var, 0.0), self.abs_max, self.abs_percentile(99.0), kurt)
