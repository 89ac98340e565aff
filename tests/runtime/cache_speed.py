"""Measure the compile cache on a model: the compile a hit replaces vs the hit, each in a fresh process.

    PYTHONPATH=$PWD python -m tests.runtime.cache_speed --model onerec-tiny --backend inductor

Prints one JSON line: the miss (``recfx.compile`` wall time, the compile report's total, and the save), the hit
(``recfx.compile`` wall time in a new process: capture + key + checked load + first call) and whether the hit's
outputs equal the compiled module's bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._pytree import tree_leaves


def run_once(model_name: str, backend: str, cache_dir: str, out: str) -> None:
    import recfx
    from recfx.models import get_model

    spec = get_model(model_name)
    model, inputs = spec.build(), spec.example_inputs(2)
    t0 = time.perf_counter()
    compiled = recfx.compile(model, inputs, backend=backend, cache_dir=cache_dir)
    wall = time.perf_counter() - t0
    outputs = compiled(*spec.example_inputs(3, seed=7))
    torch.save([t.clone() for t in tree_leaves(outputs)], out)
    t1 = time.perf_counter()
    recfx.frontend.capture(model, inputs, dynamic_dims=None)  # what a hit still pays: the key needs the graph
    capture = time.perf_counter() - t1
    print(json.dumps({"hit": compiled.bundle_path is not None, "wall_s": round(wall, 3),
                      "report_total_s": round(compiled.report.total_seconds, 3),
                      "capture_again_s": round(capture, 3)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="onerec-tiny")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--cold-inductor", action="store_true",
                        help="compile with an empty Inductor cache (TORCHINDUCTOR_CACHE_DIR), as on a fresh machine")
    parser.add_argument("--child", nargs=2, metavar=("CACHE_DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_once(args.model, args.backend, *args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in ("miss", "hit"):
            cmd = [sys.executable, "-m", "tests.runtime.cache_speed", "--model", args.model, "--backend",
                   args.backend, "--child", f"{tmp}/cache", f"{tmp}/{name}.pt"]
            env = dict(os.environ)
            if args.cold_inductor:
                env["TORCHINDUCTOR_CACHE_DIR"] = f"{tmp}/inductor-{name}"
            line = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env=env).stdout.strip().splitlines()[-1]
            rows.append(json.loads(line))
        same = all(torch.equal(a, b) for a, b in zip(torch.load(f"{tmp}/miss.pt"), torch.load(f"{tmp}/hit.pt")))
        miss, hit = rows
        print(json.dumps({"model": args.model, "backend": args.backend, "miss": miss, "hit": hit, "identical": same,
                          "speedup_vs_compile": round(miss["report_total_s"] / hit["wall_s"], 1),
                          "speedup_vs_compile_and_save": round(miss["wall_s"] / hit["wall_s"], 1),
                          "cold_inductor": args.cold_inductor,
                          "cache_bytes": sum(p.stat().st_size for p in Path(tmp, "cache").rglob("*"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
