"""Probe: host (Python) time per call of the KSA prefill op at a size where the GPU work is short, and where it goes.

Times ``torch.ops.recfx.ksa_attention`` and ``ksa_prefill`` per call in a loop (host-bound: the GPU finishes first),
the same op replayed from a CUDA graph (the GPU time alone), a ``torch.add`` of two small tensors (how fast this
host launches plain ATen work: host times differ between machines) and a cProfile of the loop.

    PYTHONPATH=$PWD python3 bench/probes/host_overhead.py 4096
"""

import cProfile
import io
import json
import pstats
import sys
import time

import torch

import recfx  # noqa: F401  (registers recfx::ksa_attention)
from recfx.kernels.ksa_prefill import ksa_prefill
from recfx.models.ksa_mask import interleaved_length

H, D, K, S, W = 16, 128, 8, 1, 128


def per_call_ms(fn, calls: int = 300) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e3


for n in (int(x) for x in sys.argv[1].split(",")):
    length = interleaved_length(n, K, S)
    q, k, v = (torch.randn(1, length, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    op = lambda: torch.ops.recfx.ksa_attention(q, k, v, K, S, W, D**-0.5)  # noqa: E731
    direct = lambda: ksa_prefill(q, k, v, K, S, W, D**-0.5)  # noqa: E731
    a, b = torch.randn(16, device="cuda"), torch.randn(16, device="cuda")
    row = {"n": n, "op_ms": per_call_ms(op), "ksa_prefill_ms": per_call_ms(direct),
           "torch_add_ms": per_call_ms(lambda: torch.add(a, b))}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            op()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        op()
    row["graph_replay_ms"] = per_call_ms(graph.replay)
    print(json.dumps(row), flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        op()
    torch.cuda.synchronize()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue()[:6000], flush=True)
