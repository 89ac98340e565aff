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

from tests.fuzz.checker import BACKENDS, FAILURES, OUTCOMES, check, known_tag, reproduction, shrink
from tests.fuzz.generator import generate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20, help="models per backend (seeds start .. start+n-1)")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run this one seed only")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)}")
    p.add_argument("--shrink", action="store_true", help="shrink failing models to fewer lines before printing")
    p.add_argument("--jsonl", help="append one JSON line per (seed, backend) to this file")
    p.add_argument("--summarize", nargs="+", metavar="JSONL",
                   help="print the table of these --jsonl files (runs in chunks) instead of running; known bugs are "
                        "matched again with the current KNOWN list")
    p.add_argument("-v", "--verbose", action="store_true", help="print every result, not only failures")
    return p


def _table(title: str, counts: dict[str, collections.Counter[str]], seconds: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("backend")
    for outcome in OUTCOMES:
        table.add_column(outcome, justify="right")
    table.add_column("s/model", justify="right")
    for backend, c in counts.items():
        table.add_row(backend, *(str(c[o]) for o in OUTCOMES), f"{seconds[backend] / max(1, sum(c.values())):.2f}")
    return table


def summarize(paths: list[str]) -> int:
    """The outcome table of earlier runs' --jsonl files; the last line for a (seed, backend) counts."""
    rows: dict[tuple[int, str], dict] = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                rows[row["seed"], row["backend"]] = row
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    seconds: collections.Counter[str] = collections.Counter()
    failed = 0
    for (seed, backend), row in sorted(rows.items()):
        outcome = row["outcome"]
        if outcome in (*FAILURES, "refused") and (tag := known_tag(backend, row["detail"])) is not None:
            outcome = "known"
            row["detail"] = f"[{tag}] {row['detail']}"
        counts[backend][outcome] += 1
        seconds[backend] += row["seconds"]
        if outcome != "match":
            print(f"seed {seed} {backend}: {outcome}: {row['detail'][:300]}".replace("\n", " | "))
        failed += outcome in FAILURES
    seeds = sorted({seed for seed, _ in rows})
    Console(highlight=False).print(_table(f"fuzz: {len(seeds)} seeds in {', '.join(paths)}", dict(counts), seconds))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)
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
    console.print(_table(f"fuzz: {len(seeds)} models, seeds {seeds[0]}..{seeds[-1]}", counts, seconds))
    return 1 if failed else 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    sys.exit(code)
