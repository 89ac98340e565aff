"""Timers: synchronous per-request latency and pipelined throughput, wall clock and CUDA events, CUDA graphs.

Two clocks are read for every measurement:

- wall clock (``time.perf_counter``): host time, what the application sees, including Python and launch overhead
  and, on GPU, the wait for the result;
- CUDA events (GPU only): device time between two events recorded on the current stream around the call.

*Latency* synchronises after every call (one request at a time); *throughput* issues calls back to back and
synchronises once at the end, so that the host can run ahead of the GPU (pipelined).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

MIN_ITERS = 5  # a time budget never stops a measurement before this many calls (or --iters if smaller)


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """How long to measure.

    Attributes:
        warmup: untimed calls before timing (at least one: lazy compilation, autotuning, allocator warm-up).
        iters: the most timed calls per measurement.
        time_budget: seconds per measurement; timing stops at ``iters`` calls or when the budget is spent (after at
            least ``min(iters, MIN_ITERS)`` calls), whichever comes first. ``None``: always ``iters`` calls.
    """

    warmup: int = 3
    iters: int = 100
    time_budget: float | None = 1.0

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the first call may compile), got {self.warmup}")
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds (or None), got {self.time_budget}")

    @property
    def min_iters(self) -> int:
        return min(self.iters, MIN_ITERS)


@dataclasses.dataclass(frozen=True)
class LatencySamples:
    """Per-call times in milliseconds; ``device_ms`` only on GPU."""

    wall_ms: list[float]
    device_ms: list[float] | None


@dataclasses.dataclass(frozen=True)
class Pipelined:
    """``calls`` back-to-back calls took ``wall_s`` on the host clock and ``device_s`` between CUDA events."""

    calls: int
    wall_s: float
    device_s: float | None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(fn: Callable[[], Any], warmup: int, device: torch.device) -> float:
    """Call ``fn`` ``warmup`` times; return the first call's wall time in ms (it includes any lazy compilation)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup - 1):
        fn()
    synchronize(device)
    return first_ms


def measure_latency(fn: Callable[[], Any], options: TimingOptions, device: torch.device) -> LatencySamples:
    """Synchronous latency: each call is timed alone, waiting for its result before the next one starts.

    Example:
        >>> s = measure_latency(lambda: sum(range(1000)), TimingOptions(iters=4), torch.device("cpu"))
        >>> len(s.wall_ms), s.device_ms
        (4, None)
    """
    cuda = device.type == "cuda"
    wall: list[float] = []
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    synchronize(device)
    start_all = time.perf_counter()
    for i in range(options.iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        fn()
        if cuda:
            end.record()
            end.synchronize()
            events.append((start, end))
        t1 = time.perf_counter()
        wall.append((t1 - t0) * 1e3)
        if _budget_spent(options, i + 1, t1 - start_all):
            break
    device_ms = [s.elapsed_time(e) for s, e in events] if cuda else None
    return LatencySamples(wall, device_ms)


def measure_pipelined(fn: Callable[[], Any], calls: int, device: torch.device) -> Pipelined:
    """Throughput: ``calls`` calls issued back to back, one synchronisation at the end."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    cuda = device.type == "cuda"
    synchronize(device)
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if cuda:
        end.record()
    synchronize(device)
    wall_s = time.perf_counter() - t0
    return Pipelined(calls, wall_s, start.elapsed_time(end) / 1e3 if cuda else None)


def _budget_spent(options: TimingOptions, done: int, elapsed_s: float) -> bool:
    return options.time_budget is not None and done >= options.min_iters and elapsed_s >= options.time_budget


class CudaGraphCall:
    """``fn(*inputs)`` captured once into a CUDA graph; calling the object replays it on the same input buffers.

    Capture follows PyTorch's recipe: warm-up calls on a side stream, then ``torch.cuda.graph``. Any host
    synchronisation or CPU work inside ``fn`` makes the capture fail with PyTorch's error (reported by the caller).

    Args:
        fn: the compiled module (or any callable of the input tensors).
        inputs: CUDA tensors; they stay the graph's static inputs.
    """

    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> None:
        if not all(x.is_cuda for x in inputs):
            raise ValueError("CUDA graphs need CUDA inputs")
        self.inputs = inputs
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*inputs)
        torch.cuda.synchronize()

    def __call__(self) -> Any:
        self.graph.replay()
        return self.outputs
