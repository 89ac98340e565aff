"""``recfx bench``: compile a model on several backends, check each against the reference, time it, report.

Exit status: 0 when every requested backend ran (or was skipped because it cannot run here), 1 when a backend
failed, an accuracy gate (``--min-cosine``/``--min-topk``) was missed or ``--compare`` found a regression,
2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from recfx.tools.commands import command, quant_help

if TYPE_CHECKING:
    from rich.console import Console

    from recfx.bench import BenchResult

log = logging.getLogger(__name__)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated backend names like eager,inductor")
    return names


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like {{\"activation\": \"static_per_tensor\"}}, "
                                         f"got {text!r}")
    return value


@command("bench", help="benchmark a model on backends: accuracy vs the reference, latency, throughput, sweeps")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recfx.backends import BACKENDS

    parser.epilog = (f"registered backends: {', '.join(BACKENDS.names())} (plus auto, auto-fp8). "
                     "Exit status: 0 ok, 1 a backend failed / accuracy gate missed / regression, 2 bad options.")
    what = parser.add_argument_group("what to run")
    what.add_argument("--model", default=None,
                      help="registered model name (recfx list models) or package.module:factory returning (model, "
                           "example_inputs); required unless --bundle names it")
    what.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                      help="time a bundle written by 'recfx compile' (loaded, not compiled) on its own backend; "
                           "--model, --dtype and --seed default to the ones it was compiled with")
    what.add_argument("--backends", type=_names, default=("auto",),
                      help="comma-separated backends in order; the first one that runs is the speedup baseline "
                           "(default: auto). Ones that cannot run here are reported as skipped; an unknown name "
                           "is an error (recfx list backends).")
    what.add_argument("--batch", type=_int_list, default=(1, 8), help="batch sizes to sweep (default 1,8)")
    what.add_argument("--seq", type=_int_list, default=None,
                      help="sequence lengths to sweep: ksa input length, onerec context tokens (one compile each)")
    what.add_argument("--beam", type=_int_list, default=None, help="beam widths to sweep (onerec; one compile each)")
    what.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when present)")
    what.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                      help="weights and float inputs (default: bf16 on CUDA, fp32 on CPU)")
    what.add_argument("--calibration", type=int, default=0, metavar="N",
                      help="random calibration batches for FP8 backends (default 0: dynamic per-token scales "
                           "need none)")
    what.add_argument("--quant", type=_json_object, default=None, metavar="JSON",
                      help=quant_help('recfx.QuantConfig fields for FP8 backends, e.g. \'{"activation": '
                                      '"static_per_tensor", "calibrator": "mse"}\' (static scales need '
                                      '--calibration N)'))
    what.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--warmup", type=int, default=3, help="untimed calls per measurement (default 3)")
    timing.add_argument("--iters", type=int, default=100, help="most timed calls per measurement (default 100)")
    timing.add_argument("--time-budget", type=float, default=1.0, metavar="SECONDS",
                        help="seconds per measurement, stopping before --iters when spent (default 1.0; 0: none)")
    timing.add_argument("--cuda-graphs", choices=("auto", "off", "on", "both"), default="auto",
                        help="measure with CUDA graphs off/on (default auto: both on CUDA, off on CPU)")
    timing.add_argument("--no-pipelined", action="store_true", help="skip the pipelined throughput measurement")
    timing.add_argument("--no-flops", action="store_true", help="do not count FLOPs (no TFLOP/s column)")
    timing.add_argument("--profile", action="store_true",
                        help="on CUDA, profile one call at the largest batch of each backend: GPU time by kernel "
                             "class and GEMM TFLOP/s (in the JSON and bench.md)")
    out = parser.add_argument_group("output")
    out.add_argument("--compact", action="store_true", help="a narrower table (p50/p99, req/s, speedup)")
    out.add_argument("--out", type=Path, metavar="DIR",
                     help="write bench.txt, bench.md, bench.json, bench.csv and bench.png into DIR")
    out.add_argument("--json", type=Path, metavar="FILE", help="write the full result as JSON")
    out.add_argument("--csv", type=Path, metavar="FILE", help="write one CSV line per measurement")
    out.add_argument("--plot", type=Path, metavar="FILE", help="write the latency / speedup chart as PNG")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    gates = parser.add_argument_group("checks (exit status 1 when missed)")
    gates.add_argument("--compare", type=Path, metavar="PREVIOUS_JSON",
                       help="compare with a previous --json result and flag regressions")
    gates.add_argument("--threshold", type=float, default=0.10,
                       help="relative slowdown that counts as a regression (default 0.10 = 10%%)")
    gates.add_argument("--compare-metric", type=_names, default=("p50", "throughput"),
                       help="p50 and/or throughput (default both)")
    gates.add_argument("--min-cosine", type=float, default=None, help="fail when an output cosine is below this")
    gates.add_argument("--min-topk", type=float, default=None,
                       help="fail when the top-k overlap (0..1) is below this")


def run(args: argparse.Namespace, on_compiled: Callable[[str, Any], None] | None = None) -> int:
    """``recfx bench``; ``on_compiled`` as :func:`recfx.bench.run_bench`'s."""
    from rich.console import Console
    from rich.markup import escape

    from recfx._io import check_writable_file, check_writable_folder
    from recfx.bench import BenchConfig, load_result, run_bench
    from recfx.bench.compare import check_comparable, compare_results
    from recfx.bench.export import write_csv, write_json, write_outputs
    from recfx.bench.plot import write_plot
    from recfx.bench.table import print_table

    previous = load_result(args.compare) if args.compare else None  # fail on a bad file before the long run
    if args.bundle is not None:
        _from_bundle(args)
    if args.model is None:
        raise ValueError("give --model (or --bundle with a bundle written by 'recfx compile')")
    config = BenchConfig(
        model=args.model, backends=args.backends, batches=args.batch, seqs=args.seq or (None,),
        beams=args.beam or (None,), device=args.device, dtype=args.dtype, warmup=args.warmup, iters=args.iters,
        time_budget=args.time_budget or None, cuda_graphs=args.cuda_graphs, pipelined=not args.no_pipelined,
        count_flops=not args.no_flops, calibration_batches=args.calibration, quant=args.quant, seed=args.seed,
        bundle=str(args.bundle) if args.bundle is not None else None, profile=args.profile)
    for path in (args.json, args.csv, args.plot):  # a bad output path fails now, not after the benchmark
        if path is not None:
            check_writable_file(path)
    if args.out is not None:
        check_writable_folder(args.out)
    if previous is not None:  # bad comparison options fail now, not after the run
        device = config.resolved_device()
        check_comparable(previous, config.model, str(device), config.resolved_dtype(device), args.threshold,
                         args.compare_metric)
    console = Console(width=None if sys.stdout.isatty() else 200)
    err_console = Console(stderr=True)
    progress: _RichProgress | _LineProgress
    if args.quiet or err_console.is_terminal:
        progress = _RichProgress(err_console, enabled=not args.quiet)
    else:  # a log file or a pipe: one timestamped line per step, so a long run shows where its time goes
        progress = _LineProgress(sys.stderr)
    try:
        result = run_bench(config, progress, on_compiled)
    finally:
        progress.close()
    # without a JSON result to read them in, failure reasons are printed whole (what to do is often at the end)
    print_table(result, console, compact=args.compact, full_reasons=args.json is None and args.out is None)
    written = write_outputs(result, args.out) if args.out else []
    if args.json:
        written.append(write_json(result, args.json))
    if args.csv:
        written.append(write_csv(result, args.csv))
    if args.plot:
        written.append(write_plot(result, args.plot))
    for path in written:
        console.print(escape(f"wrote {path}"), style="dim", highlight=False)

    problems = [f"{r.label} failed" + (f" at batch {r.batch}" if r.batch is not None else "") for r in result.failed]
    problems += _accuracy_misses(result, args.min_cosine, args.min_topk)
    if previous is not None:
        comparison = compare_results(previous, result, args.threshold, args.compare_metric)
        console.print(escape(comparison.render()), highlight=False)  # names come from a file: no markup
        problems += [f"regression: {d.describe()}" for d in comparison.regressions]
    for line in problems:
        print(f"recfx bench: {line}", file=sys.stderr)
    return 1 if problems else 0


def _from_bundle(args: argparse.Namespace) -> None:
    """Fill the model, backend, dtype and seed from the bundle's manifest (checked: hashes, versions, device)."""
    from recfx.runtime.bundle import read_manifest

    manifest = read_manifest(args.bundle)
    meta = manifest.get("meta", {})
    args.model = args.model or meta.get("model")
    args.backends = (manifest["backend"],)
    args.dtype = args.dtype or meta.get("dtype")
    if "seed" in meta:
        args.seed = meta["seed"]
    if args.device == "auto":
        args.device = manifest["device"]["type"]


def _accuracy_misses(result: BenchResult, min_cosine: float | None, min_topk: float | None) -> list[str]:
    misses = []
    for row in result.rows:
        acc = row.accuracy
        if acc is None:
            continue
        if min_cosine is not None and acc.cosine is not None and acc.cosine < min_cosine:
            misses.append(f"{row.label} batch {row.batch}: cosine {acc.cosine:.5f} < {min_cosine}")
        if min_topk is not None and acc.topk_overlap is not None and acc.topk_overlap < min_topk:
            misses.append(f"{row.label} batch {row.batch}: top-k overlap {acc.topk_overlap:.3f} < {min_topk}")
    return misses


class _LineProgress:
    """Progress as plain lines for non-terminal stderr: one when a step starts (``[12:00:01] 4/25 inductor:
    compiling``), one when it ends with its own duration (``[12:00:09] 5/25 inductor: compiling: done in 8.0s``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.total, self.done = stream, 0, 0
        self.current: tuple[str, float] | None = None  # the step under way and when it started

    def close(self) -> None:
        pass

    def start(self, total: int) -> None:
        self.total = total

    def step(self, description: str) -> None:
        self._print(description)
        self.current = (description, time.perf_counter())

    def advance(self) -> None:
        self.done += 1
        if self.current is not None:  # the runner may advance several times for one step (a failed compile)
            description, started = self.current
            self._print(f"{description}: done in {time.perf_counter() - started:.1f}s")
            self.current = None

    def _print(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.done}/{self.total} {text}", file=self.stream, flush=True)


class _RichProgress:
    """A rich progress bar on stderr fed by the runner (``start``/``step``/``advance``); silent when disabled."""

    def __init__(self, console: Console, enabled: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                 "{task.total}"), TimeElapsedColumn(), console=console, transient=True,
                                 disable=not enabled)
        self.task = self.progress.add_task("recfx bench", total=None)
        self.progress.start()

    def close(self) -> None:
        self.progress.stop()

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def step(self, description: str) -> None:
        log.info("%s", description)
        self.progress.update(self.task, description=description)

    def advance(self) -> None:
        self.progress.advance(self.task)
