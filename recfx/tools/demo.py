"""``recfx demo``: ``recfx bench`` of a bundled model on the reference backend and the best plain and FP8 backends
available here, with a compact table (what ``make demo`` runs), then what the FP8 path did and where its speed
comes from."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

import torch

from recfx.tools.commands import command

DEMO_BACKENDS = "eager,auto,auto-fp8"
DEMO_BATCH = "8"
#: The FP8 backend that is fast (FP8 tensor cores); every other FP8 backend emulates or references.
FAST_FP8 = "cuda-fp8"


#: The demo's model: the 1B one where FP8 tensor cores make the FP8 path fast (its GEMMs dominate there), the tiny one
#: elsewhere (emulated FP8 on a CPU: the point is accuracy and what the passes did, at a size a CPU runs in seconds).
GPU_MODEL, CPU_MODEL = "onerec-1b", "onerec-tiny"


def default_model() -> str:
    """``onerec-1b`` where ``cuda-fp8`` can run (a CUDA GPU with FP8 tensor cores), else ``onerec-tiny``."""
    from recfx.backends import BACKENDS

    return GPU_MODEL if BACKENDS.get(FAST_FP8)().availability().ok else CPU_MODEL


@command("demo", help=f"benchmark a bundled model ({GPU_MODEL} on a GPU with FP8 tensor cores, else {CPU_MODEL}) on "
                      "eager, the best backend and the best FP8 backend available here: accuracy and speed in a "
                      "compact table, then what FP8 did")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help=f"registered model name (default {GPU_MODEL} where "
                        f"{FAST_FP8} runs, else {CPU_MODEL})")
    parser.add_argument("--backends", default=DEMO_BACKENDS, help=f"backends (default {DEMO_BACKENDS})")
    parser.add_argument("--batch", default=DEMO_BATCH, help=f"batch sizes (default {DEMO_BATCH})")


def bench_argv(args: argparse.Namespace) -> list[str]:
    """The ``recfx bench`` arguments the demo runs."""
    return ["--model", args.model, "--backends", args.backends, "--batch", args.batch, "--compact"]


def fp8_summary(compiled: Any) -> str:
    """What an FP8 compile did, from its :class:`~recfx.runtime.compiled.CompiledModule` (the one the demo's bench
    timed): the GEMMs it quantized, the output error, the FP8 weights' memory, and where its speed comes from (FP8
    tensor cores with ``cuda-fp8``, none where FP8 is emulated)."""
    backend = compiled.backend
    report = compiled.report.sections["fp8"]
    if not compiled.has_graph_module or not hasattr(report, "quantized"):  # served from a bundle (compile cache)
        return f"FP8 ({backend}, loaded from {compiled.bundle_path}): its compile report says\n{report.render()}"
    buffers = dict(compiled.graph_module.named_buffers())
    fp8 = [b for name, b in buffers.items() if name.startswith("_fp8_")]
    fp8_bytes = sum(b.numel() * b.element_size() for b in fp8)
    weights = sum(b.numel() for b in fp8 if b.dtype == torch.float8_e4m3fn)
    dtype = next((t.dtype for name, t in (*compiled.graph_module.named_parameters(), *buffers.items())
                  if not name.startswith("_fp8_") and t.is_floating_point() and t.element_size() > 1), torch.float32)
    float_bytes = weights * torch.empty((), dtype=dtype).element_size()
    lines = [f"FP8 ({backend}): {report.quantized} of {report.linears} GEMMs quantized "
             f"(E4M3 weights per channel, activations per token); output cosine vs the float model "
             f"{report.output_cosine:.6f}",
             f"memory of the quantized layers' weights: {_size(fp8_bytes)} in FP8 (with scales) instead of "
             f"{_size(float_bytes)} in {str(dtype).removeprefix('torch.')}"]
    if "fp8_gemm" in compiled.report.sections:
        lines.append(compiled.report.sections["fp8_gemm"].render())
    if backend == FAST_FP8:
        lines.append("speed: FP8 tensor cores run the GEMMs (cuBLASLt row-wise FP8), the quantization is fused into "
                     "the kernels that produce each activation; the table above shows it against bf16.")
    else:
        lines.append(f"speed: this machine has no FP8 tensor cores, so {backend} emulates FP8 (slower than "
                     f"float, by design: it is here for accuracy checks and to show what the passes do). The "
                     f"speed-up comes from '{FAST_FP8}' on a GPU with FP8 tensor cores (sm_89+): see BENCHMARKS.md.")
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def run(args: argparse.Namespace) -> int:
    from recfx.backends import BACKENDS
    from recfx.tools import bench

    args.model = args.model or default_model()
    argv = bench_argv(args)
    print(f"recfx demo = recfx bench {shlex.join(argv)}")
    parser = argparse.ArgumentParser(prog="recfx bench")
    bench.add_arguments(parser)
    summaries: list[str] = []
    fp8_compiles: list[str] = []

    def summarise(requested: str, compiled: Any) -> None:  # the FP8 module the bench compiled, not a second compile
        if not BACKENDS.get(compiled.backend).fp8:
            return
        fp8_compiles.append(requested)
        try:
            summaries.append(fp8_summary(compiled))
        except Exception as err:  # noqa: BLE001  (a summary that cannot be made must not stop the benchmark)
            summaries.append(f"FP8 ({compiled.backend}): no summary ({type(err).__name__}: {err})")

    status = bench.run(parser.parse_args(argv), on_compiled=summarise)
    asked = [b for b in args.backends.split(",") if b == "auto-fp8" or (b in BACKENDS and BACKENDS.get(b).fp8)]
    if asked and not fp8_compiles:
        summaries.append(f"FP8: no summary: {', '.join(asked)} did not compile or cannot run here (see the table)")
    for text in summaries:
        print()
        print(text)
    return status
