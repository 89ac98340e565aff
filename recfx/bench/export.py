"""Writing bench results: JSON (the full result), CSV (one flat line per row), the table, the plot, a folder."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

from recfx._io import atomic_write_text
from recfx.bench.accuracy import Accuracy
from recfx.bench.results import BenchResult, BenchRow
from recfx.bench.stats import Stats

_STATS = [f.name for f in dataclasses.fields(Stats)]
_ACCURACY = [f.name for f in dataclasses.fields(Accuracy)]
_COMPILE = ["capture_s", "passes_s", "backend_s"]
_PLAIN = ["backend", "requested", "status", "reason", "batch", "seq", "beam", "cuda_graphs", "compile_s",
          "first_call_ms", "throughput_rps", "device_throughput_rps", "tokens_per_s", "flops", "tflops", "peak_mem_mb"]
CSV_COLUMNS = (["model", "device", "dtype"] + _PLAIN + _COMPILE + _ACCURACY
               + [f"latency_{s}_ms" if s != "n" else "latency_n" for s in _STATS]
               + [f"device_{s}_ms" if s != "n" else "device_n" for s in _STATS])


def csv_row(result: BenchResult, row: BenchRow) -> dict[str, Any]:
    """One row flattened to the CSV columns (``""`` for missing values)."""
    out: dict[str, Any] = {"model": result.model, "device": result.device, "dtype": result.dtype}
    out.update({name: getattr(row, name) for name in _PLAIN})
    out.update({name: (row.compile_detail or {}).get(name) for name in _COMPILE})
    out.update({name: getattr(row.accuracy, name) if row.accuracy else None for name in _ACCURACY})
    for prefix, stats in (("latency", row.latency_ms), ("device", row.device_ms)):
        for name in _STATS:
            key = f"{prefix}_n" if name == "n" else f"{prefix}_{name}_ms"
            out[key] = getattr(stats, name) if stats else None
    return {k: "" if v is None else v for k, v in out.items()}


def to_csv(result: BenchResult) -> str:
    """All rows as CSV text with a header line (:data:`CSV_COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow(csv_row(result, row))
    return buf.getvalue()


def write_json(result: BenchResult, path: str | Path) -> Path:
    """Write the result as JSON (atomically); ``recfx bench --compare`` reads it back."""
    atomic_write_text(path, result.to_json())
    return Path(path)


def write_csv(result: BenchResult, path: str | Path) -> Path:
    atomic_write_text(path, to_csv(result))
    return Path(path)


def write_outputs(result: BenchResult, folder: str | Path, *, plot: bool = True) -> list[Path]:
    """Write ``bench.txt`` (the table), ``bench.md`` (Markdown), ``bench.json``, ``bench.csv`` and, when asked,
    ``bench.png`` into ``folder`` (created if missing).

    Returns:
        The paths written.

    Raises:
        PermissionError / FileNotFoundError: the folder cannot be created or written.
    """
    from recfx.bench.plot import write_plot
    from recfx.bench.profile import profile_markdown
    from recfx.bench.table import markdown_table, render_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "bench.txt", folder / "bench.md"]
    atomic_write_text(written[0], render_table(result))
    atomic_write_text(written[1], markdown_table(result) + ("\n" + profiled if (profiled := profile_markdown(
        result.rows)) else ""))
    written.append(write_json(result, folder / "bench.json"))
    written.append(write_csv(result, folder / "bench.csv"))
    if plot:
        written.append(write_plot(result, folder / "bench.png"))
    return written
