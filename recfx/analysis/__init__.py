"""Distribution analysis of weights and activations (is a model FP8-friendly?)."""

from recfx.analysis.stats import DistStats, RunningStats, tensor_stats

__all__ = ["DistStats", "RunningStats", "tensor_stats"]
