"""Bench results: one row per (backend, shape, CUDA graphs) measurement, and the JSON form with its schema check.

JSON layout (``schema: "recfx.bench/1"``)::

    {"schema", "recfx_version", "created", "model", "device", "dtype", "config": {...BenchConfig...},
     "environment": {...versions, GPU...}, "rows": [row, ...]}

A row: ``backend`` (the registered backend that ran, or the requested name when none), ``requested``, ``status``
(``ok`` / ``failed`` / ``skipped``), ``reason``, ``batch``/``seq``/``beam`` (``null`` for a backend-level row of a
skipped backend or a failed compile), ``cuda_graphs``, ``compile_s`` (capture + passes incl. calibration +
backend), ``compile_detail`` (those three stages' seconds, and the compile's Inductor FX-graph cache hits, misses
and bypasses), ``accuracy`` {cosine, max_abs_err, exact, topk_overlap}, ``latency_ms`` (wall clock,
synchronous; :class:`~recfx.bench.stats.Stats`), ``device_ms`` (CUDA events), ``first_call_ms``,
``throughput_rps`` / ``device_throughput_rps`` (pipelined requests/s), ``tokens_per_s``, ``flops`` (per call),
``tflops`` (flops / p50, of the device time on GPU), ``peak_mem_mb``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from recfx.bench.accuracy import Accuracy
from recfx.bench.stats import Stats

SCHEMA = "recfx.bench/1"
STATUSES = ("ok", "failed", "skipped")


@dataclasses.dataclass
class BenchRow:
    """One measurement (or one skipped / failed backend)."""

    backend: str
    requested: str
    status: str
    reason: str = ""
    batch: int | None = None
    seq: int | None = None
    beam: int | None = None
    cuda_graphs: bool = False
    compile_s: float | None = None
    compile_detail: dict[str, float] | None = None
    accuracy: Accuracy | None = None
    latency_ms: Stats | None = None
    device_ms: Stats | None = None
    first_call_ms: float | None = None
    throughput_rps: float | None = None
    device_throughput_rps: float | None = None
    tokens_per_s: float | None = None
    flops: float | None = None
    tflops: float | None = None
    peak_mem_mb: float | None = None
    #: GPU time of one call by kernel class (``recfx.bench.profile.profile_call``), with ``--profile``
    profile: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"row status must be one of {STATUSES}, got {self.status!r}")

    @property
    def label(self) -> str:
        """What the table shows in the backend column: ``eager`` or ``auto-fp8 → eager-fp8``."""
        return self.backend if self.backend == self.requested else f"{self.requested} → {self.backend}"

    @property
    def key(self) -> tuple[Any, ...]:
        """What a row is matched on between two runs (``--compare``)."""
        return (self.backend, self.batch, self.seq, self.beam, self.cuda_graphs)

    @property
    def p50_ms(self) -> float | None:
        """The headline latency (speedups, comparisons): wall-clock p50, what the application sees."""
        return None if self.latency_ms is None else self.latency_ms.p50

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("accuracy", "latency_ms", "device_ms"):
            if out[name] is not None:
                out[name] = out[name].to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        data = dict(data)
        if data.get("accuracy") is not None:
            data["accuracy"] = Accuracy(**data["accuracy"])
        for name in ("latency_ms", "device_ms"):
            if data.get(name) is not None:
                data[name] = Stats.from_dict(data[name])
        return cls(**data)


@dataclasses.dataclass
class BenchResult:
    """A whole bench run: the rows plus what is needed to reproduce and compare it."""

    model: str
    device: str
    dtype: str
    config: dict[str, Any]
    environment: dict[str, Any]
    rows: list[BenchRow]
    created: str
    recfx_version: str
    schema: str = SCHEMA

    @property
    def failed(self) -> list[BenchRow]:
        return [r for r in self.rows if r.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["rows"] = [r.to_dict() for r in self.rows]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "bench result") -> BenchResult:
        """Rebuild a result from its JSON form after checking it (:func:`validate_result`)."""
        validate_result(data, source)
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["rows"] = [BenchRow.from_dict(r) for r in data["rows"]]
        return cls(**kwargs)


_TOP_LEVEL = {"schema": str, "recfx_version": str, "created": str, "model": str, "device": str, "dtype": str,
              "config": dict, "environment": dict, "rows": list}
_NUMBER = (int, float)
#: Row fields that hold a measurement: a finite number >= 0 (or null). NaN, infinities and negatives are refused.
_MEASURES = ("compile_s", "first_call_ms", "throughput_rps", "device_throughput_rps", "tokens_per_s", "flops",
             "tflops", "peak_mem_mb")
_ROW_FIELDS: dict[str, tuple[type, ...]] = {
    "backend": (str,), "requested": (str,), "status": (str,), "reason": (str,), "batch": (int,), "seq": (int,),
    "beam": (int,), "cuda_graphs": (bool,), "compile_detail": (dict,), "accuracy": (dict,), "latency_ms": (dict,),
    "device_ms": (dict,), "profile": (dict,), **dict.fromkeys(_MEASURES, _NUMBER),
}
_REQUIRED_ROW = ("backend", "requested", "status")
_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(Stats))
_ACCURACY_FIELDS = tuple(f.name for f in dataclasses.fields(Accuracy))
#: seconds per compile stage, then how Inductor's FX graph cache served the compile (counts; absent before 2026-12-07)
_COMPILE_DETAIL_FIELDS = ("capture_s", "passes_s", "backend_s", *(f"fxgraph_cache_{k}" for k in ("hit", "miss",
                                                                                              "bypass")))


def validate_result(data: Any, source: str = "bench result") -> None:
    """Check that ``data`` is a bench result in this schema: every field's type, timings finite and >= 0.

    Unknown fields are refused at every level (the result, a row, its stats, accuracy and compile detail); only
    ``config`` and ``environment`` are free-form.

    Raises:
        ValueError: not this schema, a bad status, unknown or missing fields, a NaN / infinite / negative timing
            (the message says where).
        TypeError: a field of the wrong type (``rows[3].latency_ms.p50: expected a number, got 'fast'``).
    """
    if not isinstance(data, dict):
        raise TypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{source}: schema {_brief(data.get('schema'))} is not {SCHEMA!r} (not a recfx bench "
                         "result, or written by an incompatible version)")
    _no_unknown(data, tuple(_TOP_LEVEL), source)
    for key, kind in _TOP_LEVEL.items():
        if not isinstance(data.get(key), kind):
            raise TypeError(f"{source}: {key!r} must be a {kind.__name__}, got {type(data.get(key)).__name__}")
    for i, row in enumerate(data["rows"]):
        _validate_row(row, f"{source}: rows[{i}]")


def _validate_row(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise TypeError(f"{where} must be an object, got {type(row).__name__}")
    _no_unknown(row, tuple(_ROW_FIELDS), where)
    for key in _REQUIRED_ROW:
        if key not in row:
            raise ValueError(f"{where}.{key}: missing")
    for key, value in row.items():
        kinds = _ROW_FIELDS[key]
        if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise TypeError(f"{where}.{key}: expected {'/'.join(k.__name__ for k in kinds)}, got {_brief(value)}")
    if row["status"] not in STATUSES:
        raise ValueError(f"{where}.status: {_brief(row['status'])} is not one of {STATUSES}")
    for key in ("batch", "seq", "beam"):
        if row.get(key) is not None and row[key] < 1:
            raise ValueError(f"{where}.{key}: must be >= 1, got {row[key]}")
    for key in _MEASURES:
        _measure(row.get(key), f"{where}.{key}", optional=True)
    for key in ("latency_ms", "device_ms"):
        stats = row.get(key)
        if stats is None:
            continue
        _no_unknown(stats, _STATS_FIELDS, f"{where}.{key}")
        for name in _STATS_FIELDS:
            _measure(stats.get(name), f"{where}.{key}.{name}", optional=False)
    if row.get("compile_detail") is not None:
        _no_unknown(row["compile_detail"], _COMPILE_DETAIL_FIELDS, f"{where}.compile_detail")
        for name, value in row["compile_detail"].items():
            _measure(value, f"{where}.compile_detail.{name}", optional=True)
    if row.get("accuracy") is not None:  # a measured error may be NaN or inf (a backend that returned NaN)
        _no_unknown(row["accuracy"], _ACCURACY_FIELDS, f"{where}.accuracy")
        for name in _ACCURACY_FIELDS:
            value = row["accuracy"].get(name)
            if value is not None and (not isinstance(value, _NUMBER) or isinstance(value, bool)):
                raise TypeError(f"{where}.accuracy.{name}: expected a number or null, got {_brief(value)}")
    if row["status"] == "ok" and row.get("latency_ms") is None:
        raise ValueError(f"{where}: an 'ok' row needs latency_ms")


def _no_unknown(data: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"{where}: unknown fields [{', '.join(_brief(k) for k in unknown[:5])}]{more}; known: "
                         f"{', '.join(known)}")


def _measure(value: Any, where: str, optional: bool) -> None:
    """A timing, rate or size: a finite number >= 0."""
    if value is None and optional:
        return
    if not isinstance(value, _NUMBER) or isinstance(value, bool):
        raise TypeError(f"{where}: expected a number, got {_brief(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be a finite number >= 0, got {value}")


def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def load_result(path: str | Path) -> BenchResult:
    """Read a JSON file written by ``recfx bench --json`` (checked against the schema).

    Raises:
        FileNotFoundError: no such file.
        ValueError / TypeError: not JSON (or nested too deeply), or not a bench result of this schema.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to be a bench result") from None
    return BenchResult.from_dict(data, source=str(path))
