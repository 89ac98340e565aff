"""``recfx export-triton``: write a Triton model repository (config.pbtxt + model files) for a stock tritonserver.

ONNX Runtime backend for ``ort``/``ort-fp8`` modules, Python backend (loading the recfx bundle) for the others;
dynamic batching and instance groups from the same options as ``recfx serve``. Exit status: 0 written, 2 bad
options (nothing is written). See docs/serving.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recfx.tools.commands import command
from recfx.tools.serve import add_serving_arguments, load_models, serving_options


@command("export-triton", help="write a Triton model repository (config.pbtxt + model files) for tritonserver")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serving_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the repository folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder at --out")


def run(args: argparse.Namespace) -> int:
    from recfx.serving.repository import export_triton, model_config_proto

    model_config_proto()  # before compiling anything
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"--out {args.out} exists; pass --overwrite to replace it or choose another folder")
    serving = serving_options(args)
    modules = load_models(args.models, args.backend)
    path = export_triton(modules, args.out, serving, overwrite=args.overwrite)
    for name in modules:
        kind = "python" if (path / name / "1" / "bundle").is_dir() else "onnxruntime"
        print(f"{path / name}: {kind} backend, {path / name / 'config.pbtxt'}")
    return 0
