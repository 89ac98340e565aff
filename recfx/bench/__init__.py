"""``recfx bench``'s engine: compile backends, check them against the reference, time them, report and compare.

    >>> from recfx.bench import BenchConfig, run_bench
    >>> result = run_bench(BenchConfig("dlrm-small", backends=("eager",), batches=(2,), iters=2, warmup=1))
    >>> result.rows[0].status, result.rows[0].accuracy.cosine > 0.9999
    ('ok', True)
"""

from recfx.bench.accuracy import Accuracy, check_accuracy, topk_overlap
from recfx.bench.config import BenchConfig
from recfx.bench.plan import BackendChoice, plan_backends
from recfx.bench.results import (
    SCHEMA,
    BenchResult,
    BenchRow,
    load_result,
    validate_result,
)
from recfx.bench.runner import run_bench
from recfx.bench.stats import Stats, summarize

__all__ = [
    "SCHEMA", "Accuracy", "BackendChoice", "BenchConfig", "BenchResult", "BenchRow", "Stats", "check_accuracy",
    "load_result", "plan_backends", "run_bench", "summarize", "topk_overlap", "validate_result",
]
