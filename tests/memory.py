"""Memory measurement shared by the tests that bound a peak (CPU allocator, torch profiler)."""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def peak_new_bytes(fn: Callable[[], object]) -> int:
    """Peak of the bytes the CPU allocator holds while ``fn`` runs, beyond what was held before."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak
