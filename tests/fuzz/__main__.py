"""Run the fuzzer: ``python -m tests.fuzz -n 200 --backends eager,ort`` (what ``make fuzz N=200`` runs).

Prints a reproduction for every failing (seed, backend) and a table of outcome counts per backend; exits 1 if any
model mismatched or crashed. ``--jsonl FILE`` appends one line per (seed, backend) so that runs in chunks add up.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from tests.fuzz.checker import BACKENDS, OUTCOMES, check, reproduction, shrink
from tests.fuzz.generator import generate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20, help="models per backend (seeds start .. start+n-1)")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)}")
    p.add_argument("--shrink", action="store_true", help="shrink failing models to fewer lines before printing")
    p.add_argument("--jsonl", help="append one JSON line per (seed, backend) to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print every result, not only failures")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        print(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else list(range(args.start, args.start + args.n))
    os.environ.setdefault("RECFX_DEBUG", "1")  # invariant checks after every pass, as in the test suite
    os.environ.setdefault("RECFX_CACHE_DIR", tempfile.mkdtemp(prefix="recfx-fuzz-cache-"))
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    console = Console(highlight=False)
    counts: dict[str, collections.Counter[str]] = {b: collections.Counter() for b in backends}
    seconds: collections.Counter[str] = collections.Counter()
    failed = 0
    log = open(args.jsonl, "a") if args.jsonl else None  # noqa: SIM115  (closed below)
    try:
        for seed in seeds:
            fm = generate(seed)
            for backend in backends:
                print(f"seed {seed} {backend} ...", end=" ", file=sys.stderr, flush=True)  # names a hard crash
                result = check(fm, backend)
                print(result.outcome, file=sys.stderr, flush=True)
                counts[backend][result.outcome] += 1
                seconds[backend] += result.seconds
                if log is not None:
                    log.write(json.dumps({"seed": seed, "backend": backend, "outcome": result.outcome,
                                          "detail": result.detail[:2000], "seconds": round(result.seconds, 3),
                                          "sqnr_db": result.sqnr_db, "quantized": result.quantized}) + "\n")
                    log.flush()
                if result.failed or result.outcome == "known" or args.verbose:
                    source = shrink(fm, result, fm.with_source) if args.shrink and result.outcome != "match" else None
                    console.print(reproduction(fm, result, source), markup=False, soft_wrap=True)
                    console.print()
                failed += result.failed
    finally:
        if log is not None:
            log.close()
    table = Table(title=f"fuzz: {len(seeds)} models, seeds {seeds[0]}..{seeds[-1]}")
    table.add_column("backend")
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    table.add_column("s/model", justify="right")
    for backend in backends:
        table.add_row(backend, *(str(counts[backend][o]) for o in OUTCOMES),
                      f"{seconds[backend] / max(1, len(seeds)):.2f}")
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    sys.exit(code)
