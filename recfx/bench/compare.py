"""Regression check between two bench results (``recfx bench --compare previous.json --threshold 0.1``).

Rows are matched on (backend, batch, seq, beam, CUDA graph). A matched row regresses when its wall-clock p50
latency grew by more than ``threshold`` (0.1 = 10 %) or its pipelined throughput fell by more than that, or when it
ran before and fails now. Rows that are new, or that only the previous run has, are listed but are not regressions
(a backend can be skipped on a machine without its library); a previous ``ok`` row whose backend now fails is.
"""

from __future__ import annotations

import dataclasses

from recfx.bench.results import BenchResult, BenchRow

METRICS = ("p50", "throughput")


@dataclasses.dataclass(frozen=True)
class Delta:
    """One matched row: ``ratio`` is new/old latency (or old/new throughput), so > 1 is slower."""

    key: tuple[object, ...]
    metric: str
    old: float | None
    new: float | None
    ratio: float | None
    regression: bool
    note: str = ""

    def describe(self) -> str:
        backend, batch, seq, beam, graphs = self.key
        where = f"{backend} batch {batch}" + (f" seq {seq}" if seq is not None else "") + (
            f" beam {beam}" if beam is not None else "") + (" CUDA graph" if graphs else "")
        if self.ratio is None:
            return f"{where}: {self.note}"
        unit = "ms" if self.metric == "p50" else "req/s"
        return (f"{where}: {self.metric} {self.old:.4g} -> {self.new:.4g} {unit} "
                f"({(self.ratio - 1) * 100:+.1f}% slower)" if self.ratio >= 1 else
                f"{where}: {self.metric} {self.old:.4g} -> {self.new:.4g} {unit} "
                f"({(1 - self.ratio) * 100:.1f}% faster)")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """All matched deltas, plus the keys only one side has."""

    threshold: float
    deltas: list[Delta]
    only_old: list[tuple[object, ...]]
    only_new: list[tuple[object, ...]]

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.regression]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def render(self) -> str:
        lines = [(f"comparison with the previous run (threshold {self.threshold * 100:.0f}%): "
                 f"{len(self.regressions)} regression(s) in {len(self.deltas)} matched measurement(s)")]
        lines += [f"  REGRESSION {d.describe()}" for d in self.regressions]
        lines += [f"  only in the previous run: {k}" for k in self.only_old]
        lines += [f"  new in this run: {k}" for k in self.only_new]
        return "\n".join(lines)


def compare_results(old: BenchResult, new: BenchResult, threshold: float = 0.1,
                    metrics: tuple[str, ...] = METRICS) -> Comparison:
    """Compare ``new`` against ``old`` (the baseline).

    Args:
        old / new: two results of the same model, device type and dtype.
        threshold: the relative change that counts as a regression (0.1 = 10 %).
        metrics: ``p50`` (wall-clock latency) and/or ``throughput`` (pipelined requests/s).

    Returns:
        A :class:`Comparison`; ``.ok`` is ``False`` when something regressed.

    Raises:
        ValueError: a negative threshold, an unknown metric, or results of different models / dtypes / devices.

    Example:
        >>> import copy
        >>> from recfx.bench import BenchConfig, run_bench
        >>> old = run_bench(BenchConfig("dlrm-small", backends=("eager",), batches=(2,), iters=3, warmup=1))
        >>> slow = copy.deepcopy(old)
        >>> slow.rows[0].latency_ms = dataclasses.replace(slow.rows[0].latency_ms, p50=old.rows[0].p50_ms * 2)
        >>> compare_results(old, old).ok, compare_results(old, slow, metrics=("p50",)).ok
        (True, False)
    """
    check_comparable(old, new.model, new.device, new.dtype, threshold, metrics)
    old_rows = {r.key: r for r in old.rows if r.batch is not None}
    new_rows = {r.key: r for r in new.rows if r.batch is not None}
    deltas = []
    for key, new_row in new_rows.items():
        old_row = old_rows.get(key)
        if old_row is None or old_row.status != "ok":
            continue
        if new_row.status != "ok":
            deltas.append(Delta(key, "status", None, None, None, True, f"ran before, now {new_row.status}: "
                                                                     f"{new_row.reason}"))
            continue
        deltas += [_delta(key, metric, old_row, new_row, threshold) for metric in metrics]
    # a backend that ran before and now fails to compile has one backend-level row (batch None)
    failed_now = {r.backend: r for r in new.rows if r.batch is None and r.status == "failed"}
    for key, old_row in old_rows.items():
        if old_row.status == "ok" and key not in new_rows and old_row.backend in failed_now:
            deltas.append(Delta(key, "status", None, None, None, True,
                                f"ran before, now fails: {failed_now[old_row.backend].reason}"))
    matched = {d.key for d in deltas}
    return Comparison(threshold, deltas,
                      only_old=[k for k in old_rows if k not in new_rows and k not in matched],
                      only_new=[k for k in new_rows if k not in old_rows])


def check_comparable(old: BenchResult, model: str, device: str, dtype: str, threshold: float = 0.1,
                     metrics: tuple[str, ...] = METRICS) -> None:
    """Raise unless a run of ``model`` on ``device`` in ``dtype`` can be compared with ``old`` as asked.

    ``recfx bench --compare`` calls it before the run, so that bad options do not cost a whole benchmark.

    Raises:
        ValueError: a negative threshold, an unknown metric, or another model / dtype / device type than ``old``.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (0.1 = 10%), got {threshold}")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ValueError(f"unknown comparison metrics {unknown}; use some of {METRICS}")
    for field, value in (("model", model), ("dtype", dtype)):
        if getattr(old, field) != value:
            raise ValueError(f"cannot compare runs of different {field}s: {getattr(old, field)!r} (previous) vs "
                             f"{value!r} (this run)")
    if old.device.split(":")[0] != device.split(":")[0]:
        raise ValueError(f"cannot compare a {old.device} run with a {device} run")


def _delta(key: tuple[object, ...], metric: str, old: BenchRow, new: BenchRow, threshold: float) -> Delta:
    if metric == "p50":
        before, after = old.p50_ms, new.p50_ms
    else:
        before, after = old.throughput_rps, new.throughput_rps
    if not before or not after:
        return Delta(key, metric, before, after, None, False, f"no {metric} on one side")
    ratio = after / before if metric == "p50" else before / after
    return Delta(key, metric, before, after, ratio, ratio > 1 + threshold)
