"""Probe: host (CPU) time per call of ``recfx::ksa_attention`` where launches, not the GPU, bound it (4K text).

Times N back-to-back calls (host-bound when the host is slower than the GPU), the same calls replayed from a
CUDA graph (GPU time), a plain ``torch.add`` of two small tensors (the host's speed at launching ATen work) and a
cProfile of the calls (where the host time goes).

    PYTHONPATH=$PWD python3 bench/probes/host_overhead.py [--n-text 4096] [--calls 300]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

import recfx.ops  # noqa: F401  (registers recfx::ksa_attention)
from recfx.models.ksa_mask import interleaved_length


def per_call_ms(fn, calls: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-text", type=int, default=4096)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args()
    chunk, window, heads, dim = 8, 128, 16, 128
    length = interleaved_length(args.n_text, chunk, 1)
    q, k, v = (torch.randn(1, length, heads, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    op = torch.ops.recfx.ksa_attention

    def call() -> None:
        op(q, k, v, chunk, 1, window, dim**-0.5)

    a, b = torch.randn(16, device="cuda"), torch.randn(16, device="cuda")
    print(f"torch.add (16 elements): {per_call_ms(lambda: torch.add(a, b), args.calls) * 1e3:.1f} us per call")
    print(f"recfx::ksa_attention n_text={args.n_text}: {per_call_ms(call, args.calls):.3f} ms per call (eager)")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        call()
    print(f"same, CUDA graph replay: {per_call_ms(graph.replay, args.calls):.3f} ms per call")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(100):
        call()
    profile.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())


if __name__ == "__main__":
    main()
