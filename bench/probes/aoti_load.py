"""Where does loading an AOTInductor bundle die? (a probe for the GPU load crash of issue 19; not a tool)

    PYTHONPATH=$PWD python3 bench/probes/aoti_load.py --out $OUT/aoti [--cases onerec-tiny:cuda-fp8:8,...]
        [--budget SECONDS]

Each case ``MODEL:BACKEND:BATCH[:mmap]`` is compiled and saved by one process (``recfx.compile`` + ``save``;
``linears-MB`` is a stack of bf16 ``nn.Linear`` layers of about MB megabytes, no recfx op in it; ``:mmap`` sets
AOTInductor's ``force_mmap_weights``), which exits before anything is loaded. Fresh processes then load the
bundle, each printing every step it reaches:

- ``recfx``: ``recfx.load`` and one call, outputs compared bit for bit with the compiling process's (C++ stack
  traces on, as in run 7; ``recfx-noa2l`` the same with ``TORCH_DISABLE_ADDR2LINE=1``: each C++ exception's trace
  then is not symbolized by addr2line, which took ~14 s an exception in run 7's compiles);
- when that one fails (or as ``--variants`` asks): ``steps`` (``aoti_load_package``'s own steps one at a time,
  timestamped: the package's metadata, Inductor's device information, the package loader), ``runner`` (the zip
  extracted here with ``extractall`` and its first shared library run by AOTInductor's container runner, without the
  package loader; ``recfx`` now loads through recfx's own extraction, ``AotiModel``),
  ``raw`` / ``raw-single`` / ``raw-index0`` (recfx imported for its ops, then ``torch._inductor.aoti_load_package``
  alone with the default arguments / ``run_single_threaded=True`` / device index 0), ``plain`` (``raw`` without
  importing recfx: ``linears`` cases), and the ``recfx`` load again under gdb for a C++ backtrace if gdb is
  installed. (Run 7 on the H100 had only the ``raw`` variants; ``recfx`` then loaded with ``aoti_load_package``.)

Results: ``summary.json`` (rewritten after every step) and one log per process under ``--out``. Cases are skipped once
``--budget`` seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_CASES = ("linears-20:inductor:8,ksa-tiny:inductor:2,onerec-tiny:cuda-fp8:8,linears-1100:inductor:8,"
                 "linears-1100:inductor:8:mmap")


def _linears(megabytes: int, width: int = 4096) -> Any:
    import torch

    layers = max(1, round(megabytes * 2**20 / (width * width * 2)))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)]), width


def make(case: str, folder: Path, device_name: str) -> dict[str, Any]:
    """Compile and save ``case`` into ``folder`` (bundle/ and io.safetensors); returns the times."""
    import torch
    from safetensors.torch import save_file

    import recfx
    from recfx.models import get_model

    name, backend, batch_s, *flags = case.split(":")
    if "mmap" in flags:  # weights appended to the shared library and mapped at load, not in its data section
        torch._inductor.config.aot_inductor.force_mmap_weights = True
    batch, device, dtype = int(batch_s), torch.device(device_name), torch.bfloat16
    gen = torch.Generator().manual_seed(0)
    if name.startswith("linears-"):
        model, width = _linears(int(name.split("-")[1]))
        model = model.to(device, dtype).eval()
        inputs: tuple[Any, ...] = (torch.randn(batch, width, generator=gen).to(device, dtype),)
        example: tuple[Any, ...] = (torch.randn(max(2, batch), width, generator=gen).to(device, dtype),)
    else:
        spec = get_model(name)
        model = spec.build().to(device, dtype).eval()
        inputs = spec.example_inputs(batch, device=device, dtype=dtype)
        example = spec.example_inputs(max(2, batch), device=device, dtype=dtype, seed=1)
    t0 = time.perf_counter()
    compiled = recfx.compile(model, example, backend=backend, config=recfx.CompileConfig(check_numerics=False))
    compile_s = time.perf_counter() - t0
    with torch.inference_mode():
        out = compiled(*inputs)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    t0 = time.perf_counter()
    compiled.save(folder / "bundle", overwrite=True)
    save_s = time.perf_counter() - t0
    tensors = {f"input_{i}": x.contiguous().cpu() for i, x in enumerate(inputs)}
    tensors.update({f"output_{i}": y.contiguous().cpu() for i, y in enumerate(outputs)})
    save_file(tensors, str(folder / "io.safetensors"))
    size = sum(f.stat().st_size for f in (folder / "bundle").rglob("*") if f.is_file())
    return {"compile_s": compile_s, "save_s": save_s, "bundle_mb": size / 2**20}


def load(folder: Path, variant: str, device_name: str) -> dict[str, Any]:
    """Load the bundle in ``folder`` the ``variant`` way and call it once; prints each step as it is reached."""
    import faulthandler

    faulthandler.enable()

    def step(what: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)

    import torch
    from safetensors.torch import load_file

    if variant != "plain":  # plain: torch alone (a bundle without recfx ops)
        import recfx
    step("imported")
    io = load_file(str(folder / "io.safetensors"))
    package = str(folder / "bundle" / "model.pt2")
    t0 = time.perf_counter()
    if variant in ("recfx", "recfx-noa2l"):
        runner: Any = recfx.load(folder / "bundle", device=device_name)
    elif variant == "steps":  # aoti_load_package's own steps, one at a time
        meta = torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(package, "model")
        step(f"metadata {meta}")
        from torch._inductor.codecache import get_device_information

        step(f"device information {get_device_information(meta['AOTI_DEVICE_KEY'])}")
        loader = torch._C._aoti.AOTIModelPackageLoader(package, "model", False, 1, -1)
        step("package loader constructed")
        runner = torch.export.pt2_archive._package.AOTICompiledModel(loader)
    elif variant == "runner":  # no package loader: the zip extracted here, the shared library run directly
        runner = _direct_runner(package, device_name, step)
    else:
        step("aoti_load_package, CUDA not initialised yet" if not torch.cuda.is_initialized() else "aoti_load_package")
        runner = torch._inductor.aoti_load_package(package, run_single_threaded=variant == "raw-single",
                                                   device_index=0 if variant == "raw-index0" else -1)
    load_s = time.perf_counter() - t0
    memory = f"; free/total GPU bytes {torch.cuda.mem_get_info()}" if device_name != "cpu" else ""
    step(f"loaded in {load_s:.2f} s{memory}")
    inputs = [io[f"input_{i}"].to(device_name) for i in range(sum(k.startswith("input_") for k in io))]
    want = [io[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in io))]
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = runner(*inputs)
        if device_name != "cpu":
            torch.cuda.synchronize()
        call_s = time.perf_counter() - t0
    got = list(out) if isinstance(out, (tuple, list)) else [out]
    step(f"called in {call_s:.2f} s")
    identical = len(got) == len(want) and all(torch.equal(g.cpu(), w) for g, w in zip(got, want))
    return {"load_s": load_s, "first_call_s": call_s, "identical": identical}


def _direct_runner(package: str, device_name: str, step: Any) -> Any:
    """The package's shared library run by AOTInductor's container runner, without ``AOTIModelPackageLoader``."""
    import tempfile
    import zipfile

    import torch
    import torch.utils._pytree as pytree

    folder = Path(tempfile.mkdtemp(prefix="aoti-direct-"))
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    so = next(folder.rglob("*.so"))
    step(f"extracted {so.name}")
    if device_name == "cpu":
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(so), 1)
    else:
        runner = torch._C._aoti.AOTIModelContainerRunnerCuda(str(so), 1, device_name, str(so.parent))
    step("container runner constructed")
    in_spec, out_spec = (pytree.treespec_loads(s) for s in runner.get_call_spec())

    def call(*args: Any) -> Any:
        flat = [x for x in pytree.tree_flatten((args, {}))[0] if isinstance(x, torch.Tensor)]
        return pytree.tree_unflatten(runner.run(flat), out_spec)

    return call


def _child(args: list[str], log: Path, timeout: float, prefix: list[str] | None = None) -> dict[str, Any]:
    cmd = [*(prefix or []), sys.executable, __file__, *args]
    env = dict(os.environ)
    if args[0] == "--make" or args[1].endswith("-noa2l"):  # C++ exceptions' traces unsymbolized (addr2line: slow)
        env["TORCH_DISABLE_ADDR2LINE"] = "1"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stdout, stderr = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
    log.write_text(f"$ {' '.join(cmd)}\nrc {rc}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    result: dict[str, Any] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)}
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if rc == 0 and lines:
        result.update(json.loads(lines[-1]))
    else:
        result["last_steps"] = stdout.strip().splitlines()[-3:]
        result["stderr_tail"] = stderr[-1500:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--variants", help="load variants to time besides recfx, whatever happens (default: "
                        "recfx-noa2l,steps,runner when the recfx load fails)")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds after which no new case starts")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--make", help="(internal) compile and save this case into --out")
    parser.add_argument("--load", help="(internal) load the bundle in --out this way: recfx, recfx-noa2l (recfx with "
                        "TORCH_DISABLE_ADDR2LINE=1), steps, runner, raw, raw-single, raw-index0, plain")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.make:
        print(json.dumps(make(args.make, out, args.device)))
        return 0
    if args.load:
        print(json.dumps(load(out, args.load, args.device)))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    start, summary = time.perf_counter(), {}
    gdb = shutil.which("gdb")
    for case in args.cases.split(","):
        if time.perf_counter() - start > args.budget:
            summary[case] = {"skipped": "budget spent"}
            continue
        tag = case.replace(":", "_")
        work = Path("/tmp/aoti-probe") / tag
        work.mkdir(parents=True, exist_ok=True)
        where = ["--out", str(work), "--device", args.device]
        record: dict[str, Any] = {"make": _child(["--make", case, *where], out / f"{tag}.make.log", 240)}
        summary[case] = record
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if record["make"]["rc"] != 0:
            continue
        record["recfx"] = _child(["--load", "recfx", *where], out / f"{tag}.recfx.log", 120)
        failed = record["recfx"]["rc"] != 0
        variants = args.variants.split(",") if args.variants else ["recfx-noa2l", "steps", "runner"] if failed else []
        for variant in (*variants, *(("plain",) if failed and case.startswith("linears") else ())):
            record[variant] = _child(["--load", variant, *where], out / f"{tag}.{variant}.log", 120)
        if failed and gdb:
            record["gdb"] = _child(["--load", "recfx", *where], out / f"{tag}.gdb.log", 150,
                                   prefix=[gdb, "-q", "-batch", "-ex", "run", "-ex", "bt 40", "--args"])
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    summary["gdb"] = gdb or "not installed"
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCH_SHOW_CPP_STACKTRACES", "1")
    sys.exit(main())
