"""Read the Triton kernels Inductor would write for a GPU backend, on a machine without a GPU (a probe, not a tool).

A GPU profile names kernels; what they compute, and why a reduction is looped or split, is in their source. This
probe compiles a model through a GPU backend's whole pipeline (``cuda-fp8`` by default, its GPU-only availability
check stood in) with Inductor's *Triton* CPU backend, so the scheduling and fusion decisions are Inductor's Triton
ones (and recfx's persistent-row heuristics), with the online softmax turned on as on CUDA and the GPU's SM count
(``--sms``, 132 by default: Inductor splits a reduction with few rows to fill the SMs, which a CPU's 2 never ask
for) and without Inductor's CPU-only fusion rules in ``ir.py`` (torch 2.11: a reused tensor computed with ``exp``,
the tiny attention's probabilities, is realized on a CPU only). The kernels cannot run (no Triton driver here: the
warm-up call fails after code generation, which is expected); their source is written::

    PYTHONPATH=$PWD python3 bench/probes/inductor_kernels_cpu.py --out /tmp/kernels [--layers 1 --batch 8]

Output: ``output_code.py`` (the whole generated module, kernels with the FX nodes each one fuses) and
``kernels.txt`` (one line per kernel: name, looped/persistent/pointwise, reduction hint, size hints). It monkeypatches
private Inductor functions (the Triton backend hash, the online-softmax device check): torch version dependent, and
the size hints follow the example batch given. What it shows matched the kernel names of H100 profiles (run 4), and
with 132 SMs the o_proj input's split quantization of the H100 probe (BENCHMARKS.md, 2026-12-07).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="onerec-1b")
    parser.add_argument("--backend", default="cuda-fp8")
    parser.add_argument("--layers", type=int, default=1, help="decoder layers kept (1: one of each kernel)")
    parser.add_argument("--batch", type=int, default=8, help="example batch (sets Inductor's size hints)")
    parser.add_argument("--regions", action="store_true", help="backend option regions=True (repeated blocks "
                        "compiled once); the time Inductor took is printed either way")
    parser.add_argument("--any-layout", dest="layout", action="store_const", const="any", help="backend option "
                        "persistent_layout='any' (whole-row reductions also for rows without Inductor's INNER hint)")
    parser.add_argument("--contiguous-layout", dest="layout", action="store_const", const="contiguous",
                        help="backend option persistent_layout='contiguous' (without either: the backend's default)")
    parser.add_argument("--narrow", action="store_true", help="a OneRec model's widths cut down (d_model "
                        "256, 4 heads of 64, d_ff 704, d_expert <= 176, vocab 1,024, beam 64; the same kernels, "
                        "smaller numbers) so that the passes' calibration stays short: for compile-time A/Bs at full "
                        "depth (--layers 16)")
    parser.add_argument("--gpu", action="store_true", help="compile and call on the CUDA GPU instead (no stand-ins): "
                        "the kernels Inductor writes there, to compare with this probe's CPU view")
    parser.add_argument("--sms", type=int, default=132, help="the streaming multiprocessors Inductor's heuristics see "
                        "on the CPU (default 132, an H100's or H200's: its split-reduction decisions depend on them; "
                        "0: the CPU's own count)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help="one more backend option, its value as JSON (e.g. realize_permuted=true)")
    parser.add_argument("--twice", action="store_true", help="compile a second time in the same process (Dynamo reset "
                        "between, Inductor's caches kept) and print Inductor's FX graph cache counters after each: "
                        "what a warm compile reuses")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import os

    if not args.gpu:
        os.environ["TRITON_INTERPRET"] = "1"
    cache = Path(tempfile.mkdtemp(prefix="recfx-kernels-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    import torch
    import torch._inductor.config as inductor_config
    import torch._inductor.fx_passes.post_grad as post_grad
    import torch.utils._triton as triton_utils

    import recfx
    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend
    from recfx.models import get_model

    if not args.gpu:
        inductor_config.cpu_backend = "triton"
        triton_utils.triton_hash_with_backend = lambda: "cpu-probe"  # no Triton driver to hash
        triton_utils.triton_backend = lambda: None

        def online_softmax_everywhere(match):  # type: ignore[no-untyped-def]
            return config.online_softmax  # noqa: F821  (post_grad's global, once this code runs as its function)

        post_grad.prepare_softmax_extra_check.__code__ = online_softmax_everywhere.__code__
        CudaFp8Backend.availability = lambda self: Availability(True, "")  # type: ignore[method-assign]
        import torch._inductor.ir as inductor_ir

        # ir.py's CPU-only fusion thresholds, as on the GPU: torch 2.11 realizes a reused tensor computed with exp
        # or sigmoid on the CPU only (its one use of is_cpu there); torch 2.13 also lowers the opcount and read
        # limits for CPU nodes. The probe wants the GPU's decisions in every case
        inductor_ir.is_cpu = lambda x: False  # type: ignore[assignment]
        if args.sms:
            from torch._inductor.runtime import hints

            create = hints.DeviceProperties.create.__func__  # type: ignore[attr-defined]
            hints.DeviceProperties.create = classmethod(  # type: ignore[method-assign]
                lambda cls, device: create(cls, device)._replace(multi_processor_count=args.sms))

    spec = get_model(args.model)
    cfg = spec.config
    if hasattr(cfg, "n_layers"):
        changes = {"n_layers": args.layers}
        if hasattr(cfg, "n_moe_layers"):
            changes["n_moe_layers"] = min(cfg.n_moe_layers, args.layers)
        if hasattr(cfg, "pathway_tokens"):
            changes["pathway_tokens"] = (8, 16, 32)  # the context length changes no decode kernel's kind
        if args.narrow and hasattr(cfg, "beam"):  # a OneRec config
            changes.update(d_model=256, n_heads=4, d_head=64, d_ff=704, vocab=1024, beam=64,
                           d_expert=min(cfg.d_expert, 176))
        cfg = dataclasses.replace(cfg, **changes)
    spec = dataclasses.replace(spec, config=cfg)
    torch.manual_seed(0)
    device = "cuda" if args.gpu else "cpu"
    model = spec.build().eval().to(device, torch.bfloat16)
    inputs = tuple(x.to(device) for x in spec.example_inputs(args.batch, dtype=torch.bfloat16))
    import time

    import recfx.backends.inductor as inductor_backend

    marks: dict[str, float] = {}
    real_compile = inductor_backend.torch.compile

    def timed_compile(*a, **k):  # type: ignore[no-untyped-def]
        marks.setdefault("torch.compile", time.perf_counter())  # the passes end here; Inductor's work follows
        return real_compile(*a, **k)

    inductor_backend.torch.compile = timed_compile  # type: ignore[assignment]
    options: dict[str, object] = {"regions": args.regions}
    if args.layout:
        options["persistent_layout"] = args.layout
    for option in args.option:
        key, eq, value = option.partition("=")
        try:
            options[key] = json.loads(value) if eq else None
        except json.JSONDecodeError:
            options[key] = None
        if options[key] is None:
            parser.error(f"--option {option!r}: give KEY=VALUE with a JSON value (true, 8192, \"any\")")
    compile_config = recfx.CompileConfig(check_numerics=False, backend_options=options)
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, "
          f"{'on the GPU' if args.gpu else f'{args.sms or os.cpu_count()} SMs seen'}, args {vars(args)}",
          file=sys.stderr)
    from torch._dynamo.utils import counters

    for attempt in range(2 if args.twice else 1):
        marks.clear()
        start = time.perf_counter()
        try:
            recfx.compile(model, inputs, backend=args.backend, config=compile_config)
        except Exception as exc:  # noqa: BLE001  (the warm-up call cannot run the kernels: expected)
            print(f"(stopped after code generation: {type(exc).__name__})", file=sys.stderr)
        end = time.perf_counter()
        passes = marks.get("torch.compile", end) - start
        what = "recfx.compile and its first call" if args.gpu else "recfx.compile until code generation stopped"
        cached = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}
        print(f"[compile {attempt + 1}] {what}: {end - start:.1f} s (passes {passes:.1f} s, Dynamo + Inductor "
              f"{end - start - passes:.1f} s); FX graph cache so far {cached}", file=sys.stderr)
        torch._dynamo.reset()
    modules = [p for p in cache.rglob("*.py") if "async_compile.triton(" in p.read_text(errors="replace")]
    if not modules:
        print("no generated module found", file=sys.stderr)
        return 1
    code = max(modules, key=lambda p: p.stat().st_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(code, out / "output_code.py")
    text = code.read_text()
    lines = []
    for m in re.finditer(r"^(triton_\w+) = async_compile\.triton\(", text, re.M):
        body = text[m.end(): text.index("''', device_str", m.end())]
        kind = re.search(r"@triton_heuristics\.(\w+)", body)
        hint = re.search(r"reduction_hint=ReductionHint\.(\w+)", body)
        sizes = re.search(r"size_hints=(\{[^}]*\})", body)
        lines.append(f"{m.group(1)}  {kind.group(1) if kind else '?'}  {hint.group(1) if hint else '-'}  "
                     f"{sizes.group(1) if sizes else ''}")
    (out / "kernels.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} kernels -> {out}")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
