"""The bench table: rich (terminal, text file) and Markdown, full or compact, from one column definition."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

from recfx.bench.results import BenchResult, BenchRow

BUSY_LOAD = 0.5  # load average per core above which the notes warn that timings are noisy
NOTE_CHARS = 400  # longest reason printed under the table


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[BenchRow], str]
    right: bool = True


def speedups(result: BenchResult) -> dict[int, float]:
    """Speedup of each ``ok`` row (by index) over the first backend's row of the same shape and graph mode.

    The first backend that has ``ok`` rows is the baseline; speedup = baseline wall p50 / this row's wall p50.
    """
    ok = [r for r in result.rows if r.status == "ok"]
    if not ok:
        return {}
    baseline = ok[0].backend
    base = {r.key[1:]: r.p50_ms for r in ok if r.backend == baseline}
    out = {}
    for i, row in enumerate(result.rows):
        ref = base.get(row.key[1:])
        if row.status == "ok" and ref and row.p50_ms:
            out[i] = ref / row.p50_ms
    return out


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _shape(row: BenchRow) -> str:
    if row.batch is None:
        return row.status
    parts = [str(row.batch)]
    if row.seq is not None:
        parts.append(f"seq {row.seq}")
    if row.beam is not None:
        parts.append(f"beam {row.beam}")
    return ", ".join(parts)


def _rate(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.1f}"


def _stat(name: str, device: bool = False) -> Callable[[BenchRow], str]:
    def cell(row: BenchRow) -> str:
        stats = row.device_ms if device else row.latency_ms
        if row.status == "failed" and row.batch is not None and name == "p50" and not device:
            return "FAILED"
        return "" if stats is None else _ms(getattr(stats, name))

    return cell


def _topk(row: BenchRow) -> str:
    overlap = row.accuracy.topk_overlap if row.accuracy else None
    return "" if overlap is None else f"{overlap * 100:.1f}%"


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def columns(result: BenchResult, compact: bool = False) -> list[Column]:
    """The table's columns; empty columns (no GPU, no FLOPs, no top-k...) are left out."""
    rows = result.rows
    speed = speedups(result)
    index = {id(r): i for i, r in enumerate(rows)}
    acc = [r.accuracy for r in rows if r.accuracy is not None]
    gpu = any(r.device_ms is not None for r in rows)
    cols = [Column("backend", lambda r: r.label, right=False), Column("batch", _shape)]
    if any(r.cuda_graphs for r in rows):
        cols.append(Column("CUDA graph", lambda r: ("on" if r.cuda_graphs else "off") if r.batch is not None else ""))
    cols.append(Column("compile s", lambda r: _num(r.compile_s, ".1f")))
    if any(a.cosine is not None for a in acc):
        cols.append(Column("cosine", lambda r: _num(r.accuracy.cosine if r.accuracy else None, ".6f")))
    if any(a.max_abs_err is not None for a in acc):
        cols.append(Column("max|err|", lambda r: _num(r.accuracy.max_abs_err if r.accuracy else None, ".2g")))
    if any(a.topk_overlap is not None for a in acc):
        cols.append(Column("top-k", _topk))
    stats = ("p50", "p99") if compact else ("p50", "p90", "p99", "mean", "min", "max")
    cols += [Column(f"{s} ms", _stat(s)) for s in stats]
    if not compact:
        cols.append(Column("1st call ms", lambda r: _num(r.first_call_ms, ".0f")))
    if gpu:
        cols.append(Column("GPU p50 ms", _stat("p50", device=True)))
    cols.append(Column("req/s", lambda r: _rate(r.throughput_rps)))
    if not compact and any(r.tokens_per_s is not None for r in rows):
        cols.append(Column("tok/s", lambda r: _rate(r.tokens_per_s)))
    if not compact and any(r.tflops is not None for r in rows):
        cols.append(Column("TFLOP/s", lambda r: _num(r.tflops, ".3g")))
    if not compact and any(r.peak_mem_mb is not None for r in rows):
        cols.append(Column("peak GiB", lambda r: _num(r.peak_mem_mb and r.peak_mem_mb / 1024, ".2f")))
    if len({r.backend for r in rows if r.status == "ok"}) > 1:
        cols.append(Column("speedup", lambda r: _times(speed.get(index[id(r)]))))
    return cols


def title(result: BenchResult) -> str:
    torch_version = result.environment.get("torch", "?")
    gpus = result.environment.get("gpus") or []
    where = f"{gpus[0]['name']} (sm {gpus[0]['capability']})" if result.device.startswith("cuda") and gpus else "CPU"
    return f"recfx bench: {result.model} on {where}, {result.dtype}, torch {torch_version}"


def legend(result: BenchResult, compact: bool = False) -> str:
    rate = ("pipelined throughput (calls back to back)" if result.config.get("pipelined", True)
            else "batch / mean latency (no pipelined measurement)")
    text = (f"latency: wall clock per call (a batch of requests), synchronous, ms; req/s: {rate}; speedup: over "
            "the first backend's p50; top-k: overlap of each request's items with the reference's")
    if not compact:
        text += "; 1st call: the first call at this shape (includes recompilation or CUDA-graph capture)"
    if any(r.device_ms is not None for r in result.rows):
        text += "; GPU p50: CUDA-event device time"
    if not compact and any(r.tflops is not None for r in result.rows):
        text += "; TFLOP/s: counted FLOPs / p50 (GPU time on GPU)"
    return text


def notes(result: BenchResult, full: bool = False) -> list[str]:
    """One note per skipped or failed row with its reason, and a warning when the machine was busy.

    Args:
        full: the whole reason (what to do included, over several lines); else its first line, cut at
            ``NOTE_CHARS``, for output that sits beside the JSON result.
    """
    out = []
    load, cores = result.environment.get("load_average"), result.environment.get("cpu_count")
    if result.device == "cpu" and load and cores and load[0] > BUSY_LOAD * cores:
        out.append(f"warning: the machine was busy when the run started (load average {load[0]:.1f} on {cores} "
                   "cores): CPU timings are noisy")
    for row in result.rows:
        if row.status != "ok":
            where = f" at batch {_shape(row)}" if row.batch is not None else ""
            graph = " with CUDA graph" if row.cuda_graphs else ""
            reason = "\n    ".join(row.reason.strip().splitlines()) if full else _short(row.reason)
            out.append(f"{row.status} {row.label}{where}{graph}: {reason}")
    return out


def _short(reason: str, limit: int = NOTE_CHARS) -> str:
    """The first line of a reason, cut at ``limit`` characters (the JSON keeps the whole text)."""
    lines = reason.strip().splitlines() or [""]
    text = lines[0]
    if len(text) > limit or len(lines) > 1:
        text = text[:limit].rstrip() + " ... (full text in the JSON result)"
    return text


def render_table(result: BenchResult, compact: bool = False, width: int = 200) -> str:
    """The table as plain text (what ``recfx bench`` prints and writes to ``bench.txt``)."""
    from rich.console import Console

    buf = io.StringIO()
    print_table(result, Console(file=buf, width=width, force_terminal=False, color_system=None), compact)
    return buf.getvalue()


def print_table(result: BenchResult, console: object, compact: bool = False, full_reasons: bool = False) -> None:
    """Print the table, its legend and the notes on ``console`` (a ``rich.console.Console``).

    ``full_reasons``: print skipped/failed reasons whole (when no JSON result keeps them), else their first line.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    assert isinstance(console, Console)
    cols = columns(result, compact)
    table = Table(title=escape(title(result)), title_justify="left", caption=escape(legend(result, compact)),
                  caption_justify="left")
    for col in cols:
        table.add_column(col.header, justify="right" if col.right else "left", no_wrap=col.header == "backend")
    for row in result.rows:
        style = {"failed": "red", "skipped": "dim"}.get(row.status)
        table.add_row(*(escape(col.cell(row)) for col in cols), style=style)
    console.print(table)
    for line in notes(result, full=full_reasons):
        style = {"failed": "red", "warning": "yellow"}.get(line.split(" ", 1)[0], "dim")
        console.print(escape(line), style=style, soft_wrap=True)


def markdown_table(result: BenchResult, compact: bool = False) -> str:
    """The same table in GitHub Markdown, with the title, legend and notes (for ``docs/`` and BENCHMARKS.md)."""
    cols = columns(result, compact)
    lines = [f"**{title(result)}**", "", "| " + " | ".join(c.header.replace("|", "\\|") for c in cols) + " |",
             "|" + "|".join("---:" if c.right else ":---" for c in cols) + "|"]
    for row in result.rows:
        lines.append("| " + " | ".join(c.cell(row).replace("|", "\\|") for c in cols) + " |")
    lines += ["", legend(result, compact) + ".", ""]
    lines += [f"- {line}" for line in notes(result)]
    return "\n".join(lines) + "\n"
