"""TensorRT against recfx's FP8 paths: accuracy and speed. NOT RUN: it needs TensorRT, which the project's machines
cannot install (its PyPI packages download from NVIDIA); no number from it exists yet (docs/tensorrt.md).

Where TensorRT >= 10.8, Torch-TensorRT and an FP8 GPU (sm_89+) exist, from the repository root::

    PYTHONPATH=$PWD python3 bench/trt.py --model onerec-tiny --batch 8 --out out/trt

For each model it compiles the reference ``eager-fp8``, the fast path ``cuda-fp8``, ``trt-fp8`` (Torch-TensorRT in
process; its fallback list is printed), and, when ``--plan`` is given, builds a plan from the model's FP8 ONNX
export with ``recfx build-engine``'s Python twin and runs it through ``PlanRunner``. Accuracy: cosine and max abs
error of every float output against ``eager-fp8`` and against the bf16 model (``recfx.analysis.numerics``).
Speed: median milliseconds per call over ``--iters`` calls after ``--warmup`` calls (CUDA events), one process,
one GPU. Results go to ``<out>/trt.json``. A backend that fails is recorded with its error, never dropped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import recfx
from recfx.analysis.numerics import compare_outputs
from recfx.backends.tensorrt.availability import torch_tensorrt_availability
from recfx.models import get_model

BACKENDS = ("eager-fp8", "cuda-fp8", "trt-fp8")


def time_ms(fn: Callable[[], Any], warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in ms, measured with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def accuracy(reference: Any, candidate: Any) -> list[dict[str, Any]]:
    return [{"name": c.name, "cosine": c.cosine, "max_abs_err": c.max_abs_err, "exact": c.exact}
            for c in compare_outputs(reference, candidate)]


def bench_model(name: str, batch: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    spec = get_model(name)
    model = spec.build(seed=0).cuda().to(torch.bfloat16)
    inputs = tuple(x.cuda() for x in spec.example_inputs(batch, seed=1))
    inputs = tuple(x.to(torch.bfloat16) if x.is_floating_point() else x for x in inputs)
    with torch.no_grad():
        bf16 = model(*inputs)
    rows: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    quant = recfx.QuantConfig(progress=False)
    for backend in BACKENDS:
        try:
            compiled = recfx.compile(model, inputs, backend=backend, quant=quant)
            outputs[backend] = compiled(*inputs)
            row: dict[str, Any] = {"ms": time_ms(lambda c=compiled: c(*inputs), args.warmup, args.iters),
                                   "vs_bf16": accuracy(bf16, outputs[backend])}
            if "tensorrt" in compiled.report.sections:
                row["tensorrt"] = compiled.report.sections["tensorrt"].to_dict()
            rows[backend] = row
        except Exception as err:  # noqa: BLE001 - a failing backend is a result, recorded with its error
            rows[backend] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    for backend, out in outputs.items():
        if backend != "eager-fp8" and "eager-fp8" in outputs:
            rows[backend]["vs_eager_fp8"] = accuracy(outputs["eager-fp8"], out)
    if args.plan:
        rows["plan"] = bench_plan(name, model, inputs, batch, args, folder, outputs.get("eager-fp8"))
    return rows


def bench_plan(name: str, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], batch: int,
               args: argparse.Namespace, folder: Path, reference: Any) -> dict[str, Any]:
    """Export the FP8 ONNX, build a plan (one profile around ``batch``), run it with ``PlanRunner``."""
    from recfx.backends.tensorrt.build import EngineBuildConfig, build_engine
    from recfx.backends.tensorrt.runtime import load_plan
    from recfx.onnx import OnnxExportConfig, export_onnx

    try:
        onnx_path, plan_path = folder / f"{name}-fp8.onnx", folder / f"{name}-fp8.plan"
        cpu_inputs = tuple(x.cpu() for x in inputs)
        compiled = recfx.compile(model.cpu().float(), cpu_inputs, backend="eager-fp8",
                                 quant=recfx.QuantConfig(progress=False))
        export_onnx(compiled, cpu_inputs, onnx_path, OnnxExportConfig(fp8=True, model_name=name, lint="strict"))
        result = build_engine(onnx_path, plan_path, EngineBuildConfig(examples={"batch": batch},
                                                                      timing_cache=str(folder / "timing.cache")))
        runner = load_plan(plan_path)
        out = runner(*inputs)
        row: dict[str, Any] = {"build_s": result.seconds, "ms": time_ms(lambda: runner(*inputs), args.warmup,
                                                                          args.iters)}
        if reference is not None:
            row["vs_eager_fp8"] = accuracy(reference, tuple(out))
        return row
    except Exception as err:  # noqa: BLE001 - recorded, never dropped
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="registered model (default onerec-tiny)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--plan", action="store_true", help="also build and run a plan from the FP8 ONNX export")
    parser.add_argument("--out", default="out/trt", help="folder for trt.json, ONNX files and plans")
    args = parser.parse_args(argv)
    avail = torch_tensorrt_availability()
    if not avail.ok:
        print(f"bench/trt.py needs TensorRT and Torch-TensorRT on an FP8 GPU: {avail.reason}", file=sys.stderr)
        return 2
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    results = {name: bench_model(name, args.batch, args, folder) for name in (args.model or ["onerec-tiny"])}
    (folder / "trt.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
