"""The bench plot (PNG): p50 latency vs the swept axis per backend, and the speedup over the first backend.

The x axis is the batch size, or the sequence length / beam when only that is swept. One line per backend (and
per value of the other swept axes); CUDA-graph measurements are dashed. Uses matplotlib's object API (no pyplot,
no global state).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from recfx._io import atomic_path
from recfx.bench.results import BenchResult, BenchRow
from recfx.bench.table import speedups, title

_AXES = ("batch", "seq", "beam")
_COLORS = [f"C{i}" for i in range(10)]  # matplotlib's default colour cycle
_AXIS_LABELS = {"batch": "batch (requests per call)", "seq": "sequence length", "beam": "beam width"}


def x_axis(rows: list[BenchRow]) -> str:
    """The swept axis to plot against: batch if it varies, else seq, else beam (batch when nothing varies)."""
    for axis in _AXES:
        if len({getattr(r, axis) for r in rows}) > 1:
            return axis
    return "batch"


def _series_name(row: BenchRow, axis: str, varying: set[str]) -> str:
    parts = [row.label] + [f"{other} {getattr(row, other)}" for other in _AXES if other != axis and other in varying]
    if row.cuda_graphs:
        parts.append("CUDA graph")
    return ", ".join(parts)


def write_plot(result: BenchResult, path: str | Path) -> Path:
    """Draw the two panels and save them as a PNG at ``path`` (written atomically).

    Returns:
        ``path``.

    Raises:
        FileNotFoundError / PermissionError: the folder does not exist or is not writable.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [(i, r) for i, r in enumerate(result.rows) if r.status == "ok" and r.p50_ms]
    axis = x_axis([r for _, r in ok]) if ok else "batch"
    varying = {a for a in _AXES if len({getattr(r, a) for _, r in ok}) > 1}
    speed = speedups(result)
    latency: dict[str, list[tuple[int, float]]] = defaultdict(list)
    gain: dict[str, list[tuple[int, float]]] = defaultdict(list)
    dashed = set()
    backends = list(dict.fromkeys(r.label for _, r in ok))
    color_of: dict[str, str] = {}  # one colour per backend; its CUDA-graph line is dashed in the same colour
    for i, row in ok:
        name = _series_name(row, axis, varying)
        color_of[name] = _COLORS[backends.index(row.label) % len(_COLORS)]
        x = getattr(row, axis)
        latency[name].append((x, row.p50_ms or 0.0))
        if i in speed:
            gain[name].append((x, speed[i]))
        if row.cuda_graphs:
            dashed.add(name)

    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for name, points in latency.items():
        xs, ys = zip(*sorted(points))
        left.plot(xs, ys, marker="o", linestyle="--" if name in dashed else "-", color=color_of[name], label=name)
    for name, points in gain.items():
        xs, ys = zip(*sorted(points))
        right.plot(xs, ys, marker="o", linestyle="--" if name in dashed else "-", color=color_of[name], label=name)
    xs_all = {getattr(r, axis) for _, r in ok}
    for ax in (left, right):
        ax.set_xlabel(_AXIS_LABELS[axis])
        if len(xs_all) > 1 and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 8:
            ax.set_xscale("log", base=2)
        if xs_all:
            ax.set_xticks(sorted(xs_all), [str(x) for x in sorted(xs_all)])
        ax.grid(True, alpha=0.3)
    left.set_ylabel("p50 latency, ms (wall clock, synchronous)")
    if latency and max(y for pts in latency.values() for _, y in pts) / max(
            min(y for pts in latency.values() for _, y in pts), 1e-9) >= 20:
        left.set_yscale("log")
    left.set_title("latency per call")
    baseline = ok[0][1].label if ok else "-"
    right.set_ylabel(f"speedup over {baseline} (p50)")
    right.set_title(f"speedup over {baseline}")
    right.axhline(1.0, color="gray", linewidth=1)
    if not ok:
        left.text(0.5, 0.5, "no successful measurement", ha="center", va="center", transform=left.transAxes)
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle(title(result))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)
