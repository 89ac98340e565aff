"""``recfx demo``: ``recfx bench`` of a bundled model on the reference backend and the best plain and FP8 backends
available here, with a compact table (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import shlex

from recfx.tools.commands import command

DEMO_BACKENDS = "eager,auto,auto-fp8"
DEMO_BATCH = "8"


@command("demo", help="benchmark a bundled model (default onerec-tiny) on eager, the best backend and the best FP8 "
                      "backend available here: accuracy and speed in a compact table")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="onerec-tiny", help="registered model name (default onerec-tiny)")
    parser.add_argument("--backends", default=DEMO_BACKENDS, help=f"backends (default {DEMO_BACKENDS})")
    parser.add_argument("--batch", default=DEMO_BATCH, help=f"batch sizes (default {DEMO_BATCH})")


def bench_argv(args: argparse.Namespace) -> list[str]:
    """The ``recfx bench`` arguments the demo runs."""
    return ["--model", args.model, "--backends", args.backends, "--batch", args.batch, "--compact"]


def run(args: argparse.Namespace) -> int:
    from recfx.tools import bench

    argv = bench_argv(args)
    print(f"recfx demo = recfx bench {shlex.join(argv)}")
    parser = argparse.ArgumentParser(prog="recfx bench")
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))
