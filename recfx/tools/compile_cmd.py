"""``recfx compile``: compile a model on a backend and write it as a bundle that ``recfx.load`` reads back.

The bundle folder (docs/deploy.md) holds the backend's compiled code (an AOTInductor package, the ONNX file or the
exported program) and a manifest; ``recfx bench --bundle DIR`` times it. Exit status: 0 written, 2 bad options, a
backend that cannot run here or cannot be bundled (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recfx.tools.commands import command, quant_help

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@command("compile", help="compile a model on a backend and save it as a deployable bundle (recfx.load reads it)")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recfx.backends import BACKENDS
    from recfx.tools.export_onnx import _dynamic_dim

    parser.epilog = f"backends: {', '.join(BACKENDS.names())}, auto, auto-fp8"
    parser.add_argument("model", help="registered model name or package.module:factory returning (model, inputs)")
    parser.add_argument("--backend", default="auto", help="backend to compile for (default auto)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the bundle folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--batch", type=int, default=2,
                        help="example batch size; >= 2 keeps the batch dynamic in the bundle (default 2)")
    parser.add_argument("--dynamic", action="append", default=[], metavar="INPUT:DIM:NAME", type=_dynamic_dim,
                        help="another dynamic dim, e.g. tokens:1:seq (repeatable; default: the registered model's "
                             "own, besides the batch)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="fp32", help="weights and float inputs")
    parser.add_argument("--quant", type=json.loads, default=None, metavar="JSON",
                        help=quant_help('QuantConfig fields for FP8 backends, e.g. \'{"weight": "per_tensor"}\''))
    parser.add_argument("--calibration", type=int, default=0, metavar="N",
                        help="calibration batches from the model's input generator for FP8 backends (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default 0)")


def run(args: argparse.Namespace) -> int:
    import torch

    import recfx
    from recfx.backends import BACKENDS, resolve_backend
    from recfx.models.resolve import resolve_model

    if args.out.exists() and not args.overwrite:
        raise ValueError(f"--out {args.out} exists; pass --overwrite to replace it or choose another folder")
    if args.batch < 1 or args.calibration < 0:
        raise ValueError("--batch must be >= 1 and --calibration >= 0")
    be, _ = resolve_backend(args.backend)
    from recfx.runtime.bundle_formats import bundle_format

    bundle_format(be.name)  # a backend without a bundle format fails before the compile, not after it
    dtype = getattr(torch, _DTYPES[args.dtype])
    name, model, inputs, spec = resolve_model(args.model, batch=args.batch, dtype=dtype, device=args.device,
                                              seed=args.seed)
    dims: dict[str, dict[int, str]] = {k: dict(v) for k, v in spec.dynamic_dims.items()} if spec else {}
    for input_name, dim, symbol in args.dynamic:
        dims.setdefault(input_name, {})[dim] = symbol
    fp8 = BACKENDS.get(be.name).fp8
    if not fp8 and (args.quant is not None or args.calibration):
        raise ValueError(f"--quant/--calibration need an FP8 backend; {be.name} does not quantize")
    quant = recfx.QuantConfig.from_dict({"progress": False, **(args.quant or {})}) if fp8 else None
    calibration = None
    if args.calibration:
        if spec is None:
            raise ValueError("--calibration needs a registered model (its input generator makes the batches)")
        calibration = [spec.example_inputs(args.batch, seed=args.seed + 1 + i, device=args.device, dtype=dtype)
                       for i in range(args.calibration)]
    t0 = time.perf_counter()
    compiled = recfx.compile(model, inputs, backend=be.name, config=recfx.CompileConfig(dynamic_dims=dims),
                             quant=quant, calibration=calibration)
    t1 = time.perf_counter()
    meta = {"model": name, "seed": args.seed, "dtype": args.dtype, "batch": args.batch, "device": args.device}
    path = compiled.save(args.out, overwrite=args.overwrite, meta=meta)
    t2 = time.perf_counter()
    checks = ", ".join(f"{c.name} cosine {c.cosine:.6f}" for c in compiled.report.numerics if c.cosine is not None)
    print(f"compiled {name} on {be.name} in {t1 - t0:.1f} s, saved in {t2 - t1:.1f} s: {path}")
    print("  " + "\n  ".join(str(s) for s in (*compiled.input_specs, *compiled.output_specs)))
    if checks:
        print(f"  numerics vs the original: {checks}")
    return 0
