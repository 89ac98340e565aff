"""``recfx build-engine MODEL.onnx -o MODEL.plan``: build a TensorRT plan from an exported ONNX file.

The network is strongly typed (FP8 comes from the file's Q/DQ nodes); ``recfx::ksa_attention`` nodes are the
``KsaAttention`` plugin. Optimisation profiles come from the file's named dynamic dims: ``--profile`` once per
profile (``short@batch=1:8:32,seq=16:128:512``); a dim a profile leaves out gets ``[1, N, 4 N]`` from
``--example SYMBOL=N``. The file is linted against TensorRT's rules in strict mode first. The plan and its manifest
(``<plan>.json``: key, SHA-256, plugins, profiles) are written atomically. ``--dry-run`` prints the profiles and
exits without TensorRT. Exit status: 0 built, 2 bad options, a lint violation, no TensorRT, or a failed build.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from recfx.tools.commands import command

if TYPE_CHECKING:
    from recfx.backends.tensorrt.build import EngineBuildConfig


@command("build-engine", help="build a TensorRT plan from an ONNX file (strongly typed, profiles from dynamic dims)")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", help="the .onnx file (recfx export-onnx writes them)")
    parser.add_argument("-o", "--output", help="the plan to write (default: the ONNX path with .plan)")
    parser.add_argument("--profile", action="append", default=[], metavar="[NAME@]SYM=MIN:OPT:MAX[,...]",
                        help="one optimisation profile (repeatable, e.g. short@seq=16:128:512 long@seq=512:2048:8192)")
    parser.add_argument("--example", action="append", default=[], metavar="SYM=N",
                        help="example size of a dynamic dim that a profile leaves out")
    parser.add_argument("--opt-level", type=int, default=3, help="TensorRT builder optimisation level 0..5 (default 3)")
    parser.add_argument("--workspace-mib", type=int, default=None, help="builder workspace limit in MiB")
    parser.add_argument("--timing-cache", default=None, help="timing cache file (read when present, then updated)")
    parser.add_argument("--no-lint", action="store_true", help="skip the strict TensorRT-rules lint")
    parser.add_argument("--dry-run", action="store_true", help="print the profiles and stop (no TensorRT needed)")


def _example(text: str) -> tuple[str, int]:
    symbol, eq, size = text.partition("=")
    if not eq or not symbol or not size.isdigit() or int(size) < 1:
        raise ValueError(f"--example expects SYMBOL=N with N >= 1, like seq=128, got {text!r}")
    return symbol, int(size)


def config_from_args(args: argparse.Namespace) -> EngineBuildConfig:
    """The :class:`EngineBuildConfig` the options describe."""
    from recfx.backends.tensorrt.build import EngineBuildConfig
    from recfx.backends.tensorrt.profiles import parse_profile

    profiles = []
    for index, text in enumerate(args.profile):
        name, dims = parse_profile(text)
        profiles.append((name or f"p{index}", {k: (d.min, d.opt, d.max) for k, d in dims.items()}))
    workspace = args.workspace_mib * (1 << 20) if args.workspace_mib is not None else None
    return EngineBuildConfig(profiles=tuple(profiles), examples=dict(_example(e) for e in args.example),
                             optimization_level=args.opt_level, workspace_bytes=workspace,
                             timing_cache=args.timing_cache, lint=not args.no_lint)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recfx.backends.tensorrt.build import build_engine, plan_profiles

    source = Path(args.onnx)
    if not source.is_file():
        raise FileNotFoundError(f"no ONNX file {source}")
    config = config_from_args(args)
    if args.dry_run:
        print(json.dumps([p.to_dict() for p in plan_profiles(source, config)], indent=1))
        return 0
    output = Path(args.output) if args.output else source.with_suffix(".plan")
    result = build_engine(source, output, config)
    print(f"wrote {result.plan} and {result.manifest} ({len(result.profiles)} profiles, {result.seconds:.1f} s)")
    return 0
