"""recfx/bench/export.py, table.py, plot.py: CSV, the output folder, the tables, the PNG."""

import copy
import csv
import io

from recfx.bench.export import CSV_COLUMNS, to_csv, write_outputs
from recfx.bench.plot import write_plot, x_axis
from recfx.bench.results import BenchRow
from recfx.bench.table import markdown_table, render_table, speedups

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_csv_has_one_line_per_row_and_flat_numbers(dlrm_result):
    lines = list(csv.DictReader(io.StringIO(to_csv(dlrm_result))))
    assert len(lines) == len(dlrm_result.rows) == 3
    assert list(lines[0]) == CSV_COLUMNS
    first = dlrm_result.rows[0]
    assert float(lines[0]["latency_p50_ms"]) == first.latency_ms.p50
    assert float(lines[0]["cosine"]) == first.accuracy.cosine
    assert lines[2]["status"] == "skipped" and lines[2]["latency_p50_ms"] == ""


def test_output_folder_gets_every_file(dlrm_result, tmp_path):
    written = write_outputs(dlrm_result, tmp_path / "new" / "folder")
    assert sorted(p.name for p in written) == ["bench.csv", "bench.json", "bench.md", "bench.png", "bench.txt"]
    assert all(p.stat().st_size > 0 for p in written)
    assert (tmp_path / "new" / "folder" / "bench.png").read_bytes().startswith(PNG_MAGIC)
    text = (tmp_path / "new" / "folder" / "bench.txt").read_text()
    assert "dlrm-small" in text and "p99 ms" in text and "test-cannot-run" in text and "needs a flux capacitor" in text


def test_tables_show_skips_speedups_and_escape_markdown(dlrm_result):
    two = copy.deepcopy(dlrm_result)
    faster = [copy.deepcopy(r) for r in two.rows if r.status == "ok"]
    for row in faster:
        row.backend = row.requested = "other"
        row.latency_ms = type(row.latency_ms)(**{**row.latency_ms.to_dict(), "p50": row.latency_ms.p50 / 2})
    two.rows = two.rows[:2] + faster + two.rows[2:]
    assert sorted(speedups(two).values()) == [1.0, 1.0, 2.0, 2.0]
    text = render_table(two)
    assert "2.00x" in text and "skipped" in text
    compact = render_table(two, compact=True)
    assert "p90 ms" not in compact and "p99 ms" in compact
    md = markdown_table(two)
    assert "| other | 4 |" in md and "max\\|err\\|" in md
    assert "- skipped test-cannot-run: not available here: needs a flux capacitor" in md


def test_failed_rows_show_failed(dlrm_result):
    result = copy.deepcopy(dlrm_result)
    result.rows.append(BenchRow("eager", "eager", "failed", "RuntimeError: out of memory", batch=64))
    text = render_table(result)
    assert "FAILED" in text and "failed eager at batch 64: RuntimeError: out of memory" in text


def test_plot_is_written_for_seq_sweeps_and_for_nothing(dlrm_result, tmp_path):
    sweep = copy.deepcopy(dlrm_result)
    for row, seq in zip(sweep.rows[:2], (128, 256)):
        row.batch, row.seq = 8, seq
    assert x_axis(sweep.rows[:2]) == "seq"
    path = write_plot(sweep, tmp_path / "seq.png")
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 10_000
    nothing = copy.deepcopy(dlrm_result)
    nothing.rows = [r for r in nothing.rows if r.status != "ok"]
    assert write_plot(nothing, tmp_path / "none.png").stat().st_size > 5_000


def test_long_errors_are_cut_in_the_notes_but_kept_in_json(dlrm_result):
    result = copy.deepcopy(dlrm_result)
    reason = "RuntimeError: " + "x" * 1000 + "\nTraceback line 2"
    result.rows.append(BenchRow("eager", "eager", "failed", reason, batch=64))
    text = render_table(result, width=3000)
    assert "full text in the JSON result" in text and "Traceback line 2" not in text
    assert result.to_dict()["rows"][-1]["reason"] == reason
