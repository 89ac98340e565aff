"""Calibrators: choose a static activation amax from what an observer saw (``max``, ``percentile``, ``mse``,
``entropy``). Each is registered by name; ``QuantConfig.calibrator`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from recfx.analysis.stats import RunningStats
from recfx.ops.fp8 import E4M3_MAX, round_to_e4m3
from recfx.registry import Registry

Calibrator = Callable[[RunningStats, float], float]
CALIBRATORS: Registry[Calibrator] = Registry("calibrator")

#: The MSE / entropy sweep: candidate amax values (geometric) in [MSE_LOW, MSE_HIGH] x the observed max.
MSE_LOW, MSE_HIGH, MSE_STEPS = 0.25, 4.0, 97
#: Relative MSE difference under which two candidates tie (the one closest to the observed max wins).
MSE_TIE = 1e-3


def register_calibrator(name: str) -> Callable[[Calibrator], Calibrator]:
    """Register ``fn(stats, percentile) -> amax`` under ``name``."""
    return CALIBRATORS.register(name)


def sweep(amax: float) -> torch.Tensor:
    """The candidate amax values of the MSE / entropy searches (float64)."""
    return amax * torch.logspace(torch.log10(torch.tensor(MSE_LOW)), torch.log10(torch.tensor(MSE_HIGH)),
                                 MSE_STEPS, dtype=torch.float64)


def fake_quant(v: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize float64 values with per-candidate scales ``amax / 448`` (broadcasting)."""
    scale = amax / E4M3_MAX
    return round_to_e4m3(v / scale) * scale


@register_calibrator("max")
def max_calibrator(stats: RunningStats, percentile: float) -> float:
    """The largest |x| seen."""
    return stats.abs_max


@register_calibrator("percentile")
def percentile_calibrator(stats: RunningStats, percentile: float) -> float:
    """The ``percentile``-th percentile of |x| (histogram resolution)."""
    return stats.abs_percentile(percentile)


@register_calibrator("mse")
def mse_calibrator(stats: RunningStats, percentile: float) -> float:
    """The amax of the sweep that minimises the quantization MSE of the histogram (bin centres, weighted).

    FP8's relative precision does not depend on the scale, so above the observed max the MSE is nearly flat:
    candidates within 0.1% of the best error count as ties, and the one closest to the observed max wins.
    """
    if stats.abs_max == 0:
        return 0.0
    candidates = sweep(stats.abs_max)[:, None]  # (C, 1)
    centers, counts = stats.bin_centers()[None, :], stats.hist[None, :]  # (1, bins)
    err = ((centers - fake_quant(centers, candidates)).pow(2) * counts).sum(dim=1)  # (C,)
    ties = err <= err.min() * (1 + MSE_TIE)
    distance = torch.where(ties, (candidates[:, 0] / stats.abs_max).log().abs(), torch.tensor(float("inf")))
    return float(candidates[int(distance.argmin()), 0])


@register_calibrator("entropy")
def entropy_calibrator(stats: RunningStats, percentile: float) -> float:
    """The amax (of the sweep, up to the max) minimising KL(P || Q) between the |x| histogram P (mass above amax
    folded into amax's bin) and its FP8 version Q (each FP8 level's mass spread over the bins that round to it)."""
    if stats.abs_max == 0:
        return 0.0
    centers = stats.bin_centers()
    best, best_kl = stats.abs_max, float("inf")
    for amax in sweep(stats.abs_max).tolist():
        if amax > stats.abs_max:
            break
        last = min(int(amax / stats.bin_width), stats.bins - 1)
        p = stats.hist[: last + 1].clone()
        p[last] += stats.hist[last + 1 :].sum()
        levels = fake_quant(centers[: last + 1], torch.tensor(amax, dtype=torch.float64))
        _, level = torch.unique(levels, return_inverse=True)
        mass = torch.zeros(int(level.max()) + 1, dtype=torch.float64).index_add_(0, level, p)
        used = torch.zeros_like(mass).index_add_(0, level, (p > 0).double())
        q = torch.where(p > 0, mass[level] / used[level].clamp(min=1), torch.zeros_like(p))
        nz = p > 0
        pn, qn = p[nz] / p.sum(), q[nz] / q.sum()
        kl = float((pn * (pn / qn).log()).sum())
        if kl < best_kl:
            best, best_kl = amax, kl
    return best
