"""A/B of backend variants on a few decoder layers of a model, on the GPU, in one process (a probe, not a tool).

A whole onerec-1b compile takes 2-3 minutes per backend variant, so one 10-minute device call holds three at most.
The kernels this project tunes (quantizations fused into their producers, the tiny attention) are the same in every
layer, so a model cut to ``--layers`` decoder layers (widths, context and beam unchanged) shows each variant's
kernels at their real shapes in ~30-50 s of compile (H100, 2 layers, run 11). Per variant: compile time, the call's
p50 (wall clock, synchronized), the output's cosine against the eager bf16 model, GPU time by kernel class and the
heaviest kernels (``torch.profiler``), and the Triton source of those kernels (copied from the files the variant's
compile added to Inductor's cache). Results are written after each variant, so a call cut short keeps what ran::

    PYTHONPATH=$PWD python3 bench/probes/layer_ab.py --out OUT [--layers 2 --batch 32] \\
        [--variant 'NAME=BACKEND' --variant 'NAME=BACKEND:{"option": value}' ...]

Without ``--variant``: ``DEFAULT_VARIANTS``. Timings compare within one run only; a cut model is not the
benchmark's whole model (its embedding, top-k and head weigh more), so its ratios are per-kernel evidence for a
default, not issue numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

#: name -> (backend, backend options): bf16 baselines, cuda-fp8's default, and its candidate options.
DEFAULT_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {  # the tuned ones last: their compiles are the longest
    "bf16": ("inductor", {}),
    "fp8": ("cuda-fp8", {}),
    "fp8-off": ("cuda-fp8", {"realize_permuted": False, "silu_quant_kernel": False}),  # cuda-fp8-off's options
    "bf16-anyrows": ("inductor", {"persistent_layout": "any"}),
    "fp8-cdt": ("cuda-fp8", {"options": {"coordinate_descent_tuning": True}}),
    "bf16-cdt": ("inductor", {"options": {"coordinate_descent_tuning": True}}),
}


def parse_variant(text: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``NAME=BACKEND`` or ``NAME=BACKEND:{json options}``."""
    name, eq, rest = text.partition("=")
    backend, colon, options = rest.partition(":")
    if not eq or not name or not backend:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: give NAME=BACKEND or NAME=BACKEND:{{json options}}")
    try:
        parsed = json.loads(options) if colon else {}
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: the options are not JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"--variant {text!r}: the options must be a JSON object")
    return name, (backend, parsed)


def cut_model(name: str, layers: int) -> Any:
    """The model's spec with ``layers`` decoder layers (every other size unchanged)."""
    from recfx.models import get_model

    spec = get_model(name)
    cfg = spec.config
    if hasattr(cfg, "n_layers"):
        changes = {"n_layers": layers}
        if hasattr(cfg, "n_moe_layers"):
            changes["n_moe_layers"] = min(cfg.n_moe_layers, layers)
        spec = dataclasses.replace(spec, config=dataclasses.replace(cfg, **changes))
    return spec


def last_float(out: Any) -> Any:
    """The last floating-point tensor of a model's output (OneRec: the beam scores)."""
    import torch

    items = out if isinstance(out, (tuple, list)) else (out,)
    floats = [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return floats[-1]


def new_kernel_sources(root: Path, before: set[Path]) -> dict[str, Path]:
    """Kernel name -> the module defining it, among the cache files written since ``before`` was listed."""
    found: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        if path in before:
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if "async_compile.triton(" in text:  # a whole graph's output code, not one kernel's module
            continue
        for kernel in re.findall(r"^def (triton_\w+)\(", text, re.M):
            found.setdefault(kernel, path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="onerec-1b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--top", type=int, default=30, help="kernels listed per variant")
    parser.add_argument("--sources", type=int, default=12, help="Triton kernel sources copied per variant")
    parser.add_argument("--variant", action="append", type=parse_variant, default=[])
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (no profile)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import torch
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    import recfx
    from recfx.bench.profile import profile_call

    variants = dict(args.variant) or DEFAULT_VARIANTS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = cut_model(args.model, args.layers)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    model = spec.build().eval().to(args.device, torch.bfloat16)
    inputs = tuple(spec.example_inputs(args.batch, device=args.device, dtype=torch.bfloat16))
    with torch.inference_mode():
        reference = last_float(model(*inputs)).double().flatten()
    result: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items() if k != "variant"},
        "variants": {k: {"backend": b, "options": o} for k, (b, o) in variants.items()},
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "triton": __import__("triton").__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "rows": []}
    root = Path(cache_dir())

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for name, (backend, options) in variants.items():
        row: dict[str, Any] = {"variant": name, "backend": backend, "options": options}
        before = set(root.rglob("*.py")) if root.exists() else set()
        try:
            torch._dynamo.reset()
            t0 = time.perf_counter()
            config = recfx.CompileConfig(check_numerics=False, backend_options=dict(options))
            compiled = recfx.compile(model, inputs, backend=backend, config=config)
            with torch.inference_mode():
                got = last_float(compiled(*inputs))
                sync()
                row["compile_s"] = time.perf_counter() - t0
                times = []
                for _ in range(args.iters):
                    t1 = time.perf_counter()
                    compiled(*inputs)
                    sync()
                    times.append((time.perf_counter() - t1) * 1e3)
            row["p50_ms"] = statistics.median(times)
            row["min_ms"] = min(times)
            row["cosine_vs_bf16"] = float(torch.nn.functional.cosine_similarity(
                got.double().flatten(), reference, dim=0))
            if cuda:
                row.update(profile_call(lambda c=compiled: c(*inputs), top=args.top))
            sources = new_kernel_sources(root, before)
            folder = out / "sources" / name
            folder.mkdir(parents=True, exist_ok=True)
            # profile names are cut at 160 characters: match a longer kernel by its prefix
            kept = [name for k in row.get("top_kernels", []) for name in sources if name.startswith(k["name"])]
            for kernel in kept[: args.sources]:
                shutil.copyfile(sources[kernel], folder / f"{kernel[:120]}.py")
            row["sources_copied"] = len(kept)
            del compiled
        except Exception as exc:  # noqa: BLE001  (one variant failing must not lose the others' rows)
            row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        result["rows"].append(row)
        (out / "layer_ab.json").write_text(json.dumps(result, indent=1))
        summary = {k: row.get(k) for k in ("compile_s", "p50_ms", "total_ms", "cosine_vs_bf16", "error")}
        print(f"{name}: {json.dumps(summary)}", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    (out / "layer_ab.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict[str, Any]) -> str:
    """The variants as a table, then each one's heaviest kernels."""
    lines = [f"{result['device']}, torch {result['torch']}, triton {result['triton']}, {result['date']}; "
             f"args {json.dumps(result['args'])}", "",
             "| variant | backend | options | compile s | p50 ms | GPU ms | cosine vs bf16 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['variant']} | {row['backend']} | `{json.dumps(row['options'])}` | "
                     f"{row.get('compile_s', 0):.1f} | {row.get('p50_ms', 0):.2f} | {row.get('total_ms', 0):.2f} | "
                     f"{row.get('cosine_vs_bf16', 0):.6f} |" + (f" {row['error']}" if "error" in row else ""))
    for row in result["rows"]:
        lines += ["", f"**{row['variant']}** classes: {json.dumps(row.get('classes', {}))}", ""]
        lines += [f"- {k['ms']:.3f} ms `{k['name']}`" for k in row.get("top_kernels", [])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
