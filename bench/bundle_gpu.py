"""Compile once, load elsewhere: compile + save time, then load + first call in a fresh process, outputs compared.

Run from the repository root (on a GPU for the deployment numbers; any backend and device works)::

    PYTHONPATH=$PWD python3 bench/bundle_gpu.py --model onerec-1b --backend cuda-fp8 --batch 8 --out $OUT/bundle

The first process compiles the model, calls it once on fixed inputs, saves the bundle and the inputs/outputs
(safetensors). A second process (a fresh interpreter: no compiled code or Inductor cache in memory from the first)
loads the bundle with empty Triton and Inductor caches (as on a machine that never compiled it), calls it on the same
inputs and compares the outputs bit for bit with the compiling process's.
``result.json`` holds the times; the goal for a deployment is load + first call < 10 s.

Where outputs differ, three more comparisons say where: the compiled module called twice (is it deterministic?),
the bundle loaded back in the compiling process (does the package compute what the in-process module computes?)
and the fresh process's second call; with the Triton autotuner choices of recfx's kernels in both processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import recfx
from recfx.kernels import autotune
from recfx.models import get_model

log = logging.getLogger("bench.bundle_gpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _flat(outputs: Any) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _differences(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[bool, list[float]]:
    """(bit-identical, per output: max |difference|, or the count of differing elements for integer outputs)."""
    got, want = [g.cpu() for g in got], [w.cpu() for w in want]
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return False, [float("nan")] * len(got)  # another structure or shape: nothing to subtract
    identical = all(torch.equal(g, w) for g, w in zip(got, want))
    diffs = [float((g.double() - w.double()).abs().max()) if g.is_floating_point() and g.numel() else
             float((g != w).sum()) for g, w in zip(got, want)]
    return identical, diffs




def compile_and_save(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    spec = get_model(args.model)
    model = spec.build().to(device, dtype).eval()
    inputs = spec.example_inputs(args.batch, device=device, dtype=dtype)
    example = spec.example_inputs(max(2, args.batch), device=device, dtype=dtype, seed=1)
    t0 = time.perf_counter()
    compiled = recfx.compile(model, example, backend=args.backend, config=recfx.CompileConfig(check_numerics=False))
    compile_s = time.perf_counter() - t0
    log.info("compiled in %.1f s", compile_s)
    with torch.inference_mode():
        t0 = time.perf_counter()
        outputs = _flat(compiled(*inputs))
        _sync(device)
        first_call_s = time.perf_counter() - t0
        repeat_identical, repeat_diffs = _differences(_flat(compiled(*inputs)), outputs)
    folder = Path(args.out)
    t0 = time.perf_counter()
    compiled.save(folder / "bundle", overwrite=True, meta={"model": args.model, "batch": args.batch})
    save_s = time.perf_counter() - t0
    log.info("saved in %.1f s", save_s)
    tensors = {f"input_{i}": x.contiguous().cpu() for i, x in enumerate(inputs)}
    tensors.update({f"output_{i}": y.contiguous().cpu() for i, y in enumerate(outputs)})
    save_file(tensors, str(folder / "io.safetensors"))
    size = sum(f.stat().st_size for f in (folder / "bundle").rglob("*") if f.is_file())
    result = {"model": args.model, "backend": args.backend, "batch": args.batch, "device": _device_name(device),
              "compile_s": compile_s, "first_call_in_process_s": first_call_s, "save_s": save_s,
              "bundle_mb": size / 2**20, "in_process_repeat_identical": repeat_identical,
              "in_process_repeat_differences": repeat_diffs, "autotune_compiling_process": autotune.record()}
    (folder / "result.json").write_text(json.dumps(result, indent=1))  # kept if what follows crashes (--resume)
    del compiled, model  # (the in-process load below needs the memory)
    gc.collect()
    t0 = time.perf_counter()
    here = recfx.load(folder / "bundle", device=device)  # the package in the compiling process
    with torch.inference_mode():
        here_outputs = _flat(here(*inputs))
        _sync(device)
    here_s = time.perf_counter() - t0
    here_identical, here_diffs = _differences(here_outputs, outputs)
    save_file({f"here_{i}": y.contiguous().cpu() for i, y in enumerate(here_outputs)}, str(folder / "here.safetensors"))
    del here, here_outputs, outputs  # leave the loading process most of the GPU's memory, as a deployment would
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result.update({"load_plus_first_call_in_compiling_process_s": here_s,
                   "load_in_compiling_process_identical": here_identical,
                   "load_in_compiling_process_differences": here_diffs})
    return result


def load_and_call(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    folder = Path(args.out)
    t0 = time.perf_counter()
    loaded = recfx.load(folder / "bundle", device=device)
    load_s = time.perf_counter() - t0
    io = load_file(str(folder / "io.safetensors"))
    inputs = [io[f"input_{i}"].to(device) for i in range(sum(k.startswith("input_") for k in io))]
    want = [io[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in io))]
    here_io = load_file(str(folder / "here.safetensors")) if (folder / "here.safetensors").is_file() else {}
    here = [here_io[f"here_{i}"] for i in range(len(here_io))]
    with torch.inference_mode():
        t0 = time.perf_counter()
        got = _flat(loaded(*inputs))
        _sync(device)
        first_call_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = _flat(loaded(*inputs))
        _sync(device)
        second_call_s = time.perf_counter() - t0
    identical, diffs = _differences(got, want)
    same_as_here, here_diffs = _differences(got, here) if here else (None, None)
    repeat_identical, _ = _differences(again, got)
    return {"load_s": load_s, "first_call_after_load_s": first_call_s, "second_call_s": second_call_s,
            "load_plus_first_call_s": load_s + first_call_s, "outputs_identical": identical,
            "output_differences": diffs, "identical_to_load_in_compiling_process": same_as_here,
            "differences_to_load_in_compiling_process": here_diffs, "loaded_repeat_identical": repeat_identical,
            "autotune_loading_process": autotune.record()}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="onerec-1b")
    parser.add_argument("--backend", default="cuda-fp8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", required=True, help="folder for the bundle, io.safetensors and result.json")
    parser.add_argument("--load", action="store_true", help="(internal) the fresh process: load, call, compare")
    parser.add_argument("--resume", action="store_true",
                        help="if --out already holds a bundle this script saved (result.json says so), skip the "
                             "compile and only load + call in a fresh process (a GPU call too short for both)")
    args = parser.parse_args(argv)
    folder = Path(args.out)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr if args.load else sys.stdout)
    if args.load:
        print(json.dumps(load_and_call(args)))
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "result.json"
    if args.resume and saved.is_file() and "save_s" in json.loads(saved.read_text()):
        result = json.loads(saved.read_text())
        log.info("resuming: the bundle in %s was saved in %.1f s; loading it", folder, result["save_s"])
    else:
        result = compile_and_save(args)
        saved.write_text(json.dumps(result, indent=1))
    cmd = [sys.executable, __file__, "--load", "--out", str(folder), "--device", args.device]
    # a deployment machine starts without this one's compiled kernels: empty Triton and Inductor caches
    cold = Path(tempfile.mkdtemp(prefix="bundle-load-"))
    env = {**os.environ, "TRITON_CACHE_DIR": str(cold / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(cold / "inductor")}
    child = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    shutil.rmtree(cold, ignore_errors=True)
    log.info("loading process:\n%s", child.stderr[-8000:])
    if child.returncode:
        result["load_error"] = child.stderr[-4000:]
    else:
        result.update(json.loads(child.stdout.strip().splitlines()[-1]))
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0 if result.get("outputs_identical") else 1


if __name__ == "__main__":
    sys.exit(main())
