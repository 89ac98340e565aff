"""The output metrics (``numerics``) and weight / activation distributions (is a model FP8-friendly?)."""

from recfx.analysis.stats import DistStats, RunningStats, tensor_stats

__all__ = ["DistStats", "RunningStats", "tensor_stats"]
