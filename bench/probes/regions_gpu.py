"""Compile a model with and without ``regions`` on the GPU: compile time, agreement, call time (a probe).

    PYTHONPATH=$PWD python3 bench/probes/regions_gpu.py MODEL BACKEND BATCH
"""

from __future__ import annotations

import sys
import time

import torch

import recfx
from recfx.models import get_model

name, backend, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = get_model(name)
model = spec.build().to("cuda", torch.bfloat16).eval()
inputs = spec.example_inputs(batch, device="cuda", dtype=torch.bfloat16)
outs = {}
for regions in (True, False):
    torch._dynamo.reset()
    t0 = time.perf_counter()
    config = recfx.CompileConfig(check_numerics=False, backend_options={"regions": regions})
    compiled = recfx.compile(model, inputs, backend=backend, config=config)
    compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        out = compiled(*inputs)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            compiled(*inputs)
        torch.cuda.synchronize()
    outs[regions] = [o.float() for o in (out if isinstance(out, (tuple, list)) else [out])]
    section = compiled.report.sections.get("regions")
    print(f"regions={regions}: compile {compile_s:.1f} s, call {(time.perf_counter() - t0) / 10 * 1e3:.2f} ms; "
          f"{section.render() if section else 'no regions section'}", flush=True)
for a, b in zip(outs[True], outs[False]):
    print("max |diff|", float((a - b).abs().max()), "equal", bool(torch.equal(a, b)))
