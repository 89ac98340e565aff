"""``recfx demo``: ``recfx bench`` of a bundled model on the reference backend and the best plain and FP8 backends
available here, with a compact table (what ``make demo`` runs), then what the FP8 path did and where its speed
comes from."""

from __future__ import annotations

import argparse
import shlex

import torch

from recfx.tools.commands import command

DEMO_BACKENDS = "eager,auto,auto-fp8"
DEMO_BATCH = "8"
#: The FP8 backend that is fast (FP8 tensor cores); every other FP8 backend emulates or references.
FAST_FP8 = "cuda-fp8"


@command("demo", help="benchmark a bundled model (default onerec-tiny) on eager, the best backend and the best FP8 "
                      "backend available here: accuracy and speed in a compact table, then what FP8 did")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="onerec-tiny", help="registered model name (default onerec-tiny)")
    parser.add_argument("--backends", default=DEMO_BACKENDS, help=f"backends (default {DEMO_BACKENDS})")
    parser.add_argument("--batch", default=DEMO_BATCH, help=f"batch sizes (default {DEMO_BATCH})")


def bench_argv(args: argparse.Namespace) -> list[str]:
    """The ``recfx bench`` arguments the demo runs."""
    return ["--model", args.model, "--backends", args.backends, "--batch", args.batch, "--compact"]


def fp8_summary(model_name: str) -> str:
    """What ``auto-fp8`` does here: the backend it picks and why it is (not) fast, the GEMMs it quantized, the
    output error and the FP8 weights' memory (compiles the model once more, on the CPU or the GPU)."""
    import recfx
    from recfx.backends import resolve_backend
    from recfx.models import get_model

    backend, _ = resolve_backend("auto-fp8")
    spec = get_model(model_name)
    device = "cuda" if backend.name == FAST_FP8 else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = spec.build().to(device, dtype)
    compiled = recfx.compile(model, spec.example_inputs(2, device=device, dtype=dtype), backend=backend.name)
    report = compiled.report.sections["fp8"]
    fp8 = [b for name, b in compiled.graph_module.named_buffers() if name.startswith("_fp8_")]
    fp8_bytes = sum(b.numel() * b.element_size() for b in fp8)
    weights = sum(b.numel() for b in fp8 if b.dtype == torch.float8_e4m3fn)
    float_bytes = weights * torch.empty((), dtype=dtype).element_size()
    lines = [f"FP8 ({backend.name}): {report.quantized} of {report.linears} GEMMs quantized "
             f"(E4M3 weights per channel, activations per token); output cosine vs the float model "
             f"{report.output_cosine:.6f}",
             f"memory of the quantized layers' weights: {_size(fp8_bytes)} in FP8 (with scales) instead of "
             f"{_size(float_bytes)} in {str(dtype).removeprefix('torch.')}"]
    if "fp8_gemm" in compiled.report.sections:
        lines.append(compiled.report.sections["fp8_gemm"].render())
    if backend.name == FAST_FP8:
        lines.append("speed: FP8 tensor cores run the GEMMs (cuBLASLt row-wise FP8), the quantization is fused into "
                     "the kernels that produce each activation; the table above shows it against bf16.")
    else:
        lines.append(f"speed: this machine has no FP8 tensor cores, so {backend.name} emulates FP8 (slower than "
                     f"float, by design: it is here for accuracy checks and to show what the passes do). The "
                     f"speed-up comes from '{FAST_FP8}' on a GPU with FP8 tensor cores (sm_89+): see BENCHMARKS.md.")
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def run(args: argparse.Namespace) -> int:
    from recfx.tools import bench

    argv = bench_argv(args)
    print(f"recfx demo = recfx bench {shlex.join(argv)}")
    parser = argparse.ArgumentParser(prog="recfx bench")
    bench.add_arguments(parser)
    status = bench.run(parser.parse_args(argv))
    if "auto-fp8" in args.backends.split(",") or FAST_FP8 in args.backends.split(","):
        print()
        print(fp8_summary(args.model))
    return status
