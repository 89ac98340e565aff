"""``recfx demo``: compile a bundled model on the best available backend and print the report."""

from __future__ import annotations

import argparse
import time

import torch

from recfx.tools.commands import command


@command("demo", help="compile a bundled model (default onerec-tiny) on the best available backend, print the report")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="onerec-tiny", help="registered model name (default onerec-tiny)")
    parser.add_argument("--backend", default="auto-fp8",
                        help="backend name, 'auto' or 'auto-fp8' (default: auto-fp8, falling back to auto when "
                             "no FP8 backend is registered)")
    parser.add_argument("--batch", type=int, default=4, help="requests per batch (default 4)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (default 10)")


def run(args: argparse.Namespace) -> int:
    import recfx
    from recfx.backends import BACKENDS
    from recfx.tools.common import resolve_model

    backend = args.backend
    if backend == "auto-fp8" and not any(BACKENDS.get(n).fp8 for n in BACKENDS.names()):
        print("no FP8 backend is registered in this build; using backend='auto'")
        backend = "auto"
    name, model, inputs, _ = resolve_model(args.model, batch=args.batch)
    compiled = recfx.compile(model, inputs, backend=backend)
    print(compiled.report)
    for label, fn in (("original (eager fp32)", model), (f"compiled ({compiled.backend})", compiled)):
        with torch.inference_mode():
            fn(*inputs)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn(*inputs)
            ms = (time.perf_counter() - t0) / args.iters * 1e3
        print(f"{label:>28}: {ms:8.2f} ms per batch of {args.batch} requests (mean of {args.iters}, wall clock)")
    return 0
