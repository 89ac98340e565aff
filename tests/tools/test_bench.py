"""``recfx bench`` and ``recfx demo`` end to end: tables, files, exit statuses (compare, failures, gates, bad input)."""

import json
import re
import time
from pathlib import Path

import pytest

from recfx.backends import BACKENDS, Availability, register_backend
from recfx.backends.eager import EagerBackend
from recfx.bench import load_result
from recfx.tools.cli import main

FAST = ["--iters", "2", "--warmup", "1", "--time-budget", "0", "--quiet"]


@pytest.fixture
def cannot_run():
    """A registered backend that cannot run here (``test-cli-cannot-run``)."""
    @register_backend("test-cli-cannot-run")
    class CannotRun(EagerBackend):
        def availability(self):
            return Availability(False, "needs a flux capacitor")

    yield "test-cli-cannot-run"
    BACKENDS.remove("test-cli-cannot-run")


def test_onerec_tiny_end_to_end(tmp_path, capsys, cannot_run):
    out = tmp_path / "run"
    code = main(["bench", "--model", "onerec-tiny", "--backends", f"eager,{cannot_run}", "--batch", "2", "--compact",
                 "--out", str(out), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
                 "--plot", str(tmp_path / "r.png"), *FAST])
    text = capsys.readouterr().out
    assert code == 0
    assert "onerec-tiny" in text and "top-k" in text and "100.0%" in text
    assert "skipped test-cli-cannot-run: not available here: needs a flux capacitor" in text
    for name in ("bench.txt", "bench.md", "bench.json", "bench.csv", "bench.png"):
        assert (out / name).stat().st_size > 0
    result = load_result(tmp_path / "r.json")
    (row,) = [r for r in result.rows if r.status == "ok"]
    assert row.batch == 2 and row.accuracy.topk_overlap == 1.0 and row.latency_ms.n == 2
    assert (tmp_path / "r.csv").read_text().count("\n") == 3 and (tmp_path / "r.png").stat().st_size > 0


def _dlrm(tmp_path, name, *extra):
    return main(["bench", "--model", "dlrm-small", "--backends", "eager", "--batch", "4", "--json",
                 str(tmp_path / name), *FAST, *extra])


def _scaled(tmp_path, src, dst, factor):
    data = json.loads((tmp_path / src).read_text())
    for row in data["rows"]:
        if row["latency_ms"]:
            row["latency_ms"] = {k: (v * factor if k != "n" else v) for k, v in row["latency_ms"].items()}
            row["throughput_rps"] /= factor
    (tmp_path / dst).write_text(json.dumps(data))
    return str(tmp_path / dst)


def test_compare_flags_a_regression_and_passes_an_improvement(tmp_path, capsys):
    assert _dlrm(tmp_path, "base.json") == 0
    much_faster_before = _scaled(tmp_path, "base.json", "fast.json", 1e-3)
    assert _dlrm(tmp_path, "new.json", "--compare", much_faster_before) == 1
    captured = capsys.readouterr()
    assert "REGRESSION eager batch 4" in captured.out and "regression:" in captured.err
    much_slower_before = _scaled(tmp_path, "base.json", "slow.json", 1e3)
    assert _dlrm(tmp_path, "new2.json", "--compare", much_slower_before, "--threshold", "0.2") == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_accuracy_gate(tmp_path, capsys):
    assert _dlrm(tmp_path, "a.json", "--min-cosine", "1.5") == 1
    assert "cosine" in capsys.readouterr().err
    assert _dlrm(tmp_path, "b.json", "--min-cosine", "0.999") == 0


def test_a_failing_backend_is_a_row_and_exit_1(tmp_path, capsys):
    @register_backend("test-cli-broken")
    class Broken(EagerBackend):
        def compile(self, gm, ctx):
            raise RuntimeError("kaboom in compile")

    try:
        code = main(["bench", "--model", "dlrm-small", "--backends", "test-cli-broken,eager", "--batch", "2",
                     *FAST])
    finally:
        BACKENDS.remove("test-cli-broken")
    captured = capsys.readouterr()
    assert code == 1
    assert "failed test-cli-broken: compile failed: RuntimeError: kaboom in compile" in captured.out
    assert "│ eager" in captured.out  # the next backend still ran
    assert "test-cli-broken failed" in captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "dlrm-small", "--seq", "64"], "takes no sequence length"),
    (["--model", "dlrm-small", "--compare", "/no/such/file.json"], "file.json"),
    (["--model", "dlrm-small", "--json", "/no/such/dir/r.json"], "does not exist"),
    (["--model", "dlrm-small", "--cuda-graphs", "on"], "CUDA graphs need"),
    (["--model", "dlrm-small", "--quant", '{"eval_batches": "4"}'], "QuantConfig.eval_batches: expected an int"),
    (["--model", "dlrm-small", "--quant", '{"block_size": true}'], "QuantConfig.block_size: expected an int, got True"),
])
def test_bad_input_exits_2_with_a_message(argv, message, capsys):
    assert main(["bench", *argv, *FAST]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--batch", "a,b"], ["--quant", "[1]"], ["--quant", "{"]])
def test_bad_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--model", "dlrm-small", *argv])
    assert info.value.code == 2


def test_demo_runs_the_bench(capsys):
    assert main(["demo", "--model", "dlrm-small", "--backends", "eager", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "recfx demo = recfx bench --model dlrm-small --backends eager --batch 2 --compact" in out
    assert "dlrm-small" in out and "p50 ms" in out and "p90 ms" not in out


@pytest.mark.parametrize(("extra", "message"), [
    (["--threshold", "-0.5"], "threshold must be >= 0"),
    (["--compare-metric", "p42"], "unknown comparison metrics"),
    (["--model", "onerec-tiny"], "different models"),
])
def test_bad_compare_options_fail_before_the_run(tmp_path, capsys, monkeypatch, extra, message):
    """A wrong --threshold / --compare-metric / baseline of another model is refused before anything is timed."""
    import recfx.bench

    assert _dlrm(tmp_path, "base.json") == 0
    monkeypatch.setattr(recfx.bench, "run_bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    argv = ["bench", "--model", "dlrm-small", "--backends", "eager", "--batch", "4", *FAST,
            "--compare", str(tmp_path / "base.json"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("option", "target", "message"), [
    ("--out", "taken", "it is a file; give a folder"),
    ("--out", "taken/sub", "is inside"),
    ("--json", "taken/r.json", "is a file, not a folder"),
    ("--json", "adir", "it is a folder; give a file name"),
    ("--csv", "nodir/r.csv", "does not exist"),
    ("--out", "ro/new", "cannot be created"),
    ("--plot", "ro/p.png", "not writable"),
])
def test_bad_output_paths_fail_before_the_run(tmp_path, capsys, monkeypatch, option, target, message):
    """Every output path is checked before the benchmark (it used to fail after it, with a traceback for --out)."""
    import os

    import recfx._io
    import recfx.bench

    (tmp_path / "taken").write_text("")
    (tmp_path / "adir").mkdir()
    (tmp_path / "ro").mkdir()
    real_access = os.access  # a read-only folder (chmod does not stop root, who runs CI here)
    monkeypatch.setattr(recfx._io.os, "access", lambda p, mode: Path(p).name != "ro" and real_access(p, mode))
    monkeypatch.setattr(recfx.bench, "run_bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "--model", "dlrm-small", option, str(tmp_path / target), *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_progress_lines_give_each_step_its_own_duration(capsys, monkeypatch):
    """Logs and pipes get a timestamped line when a step starts (a run cut short shows where it is) and one when it
    ends, with that step's duration (it used to print the previous step's time beside the next step's name)."""
    import recfx

    real = recfx.compile

    def slow_compile(*args, **kwargs):  # the compile step takes >= 1 s
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(recfx, "compile", slow_compile)
    argv = ["bench", "--model", "dlrm-small", "--backends", "eager", "--batch", "2,3", "--iters", "2", "--warmup", "1",
            "--time-budget", "0", "--no-flops"]
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]
    steps = [re.match(r"\[\d\d:\d\d:\d\d\] (\d+)/(\d+) (.+?)(?:: done in (\d+\.\d)s)?$", ln) for ln in lines]
    assert all(steps), lines
    names = ["reference batch 2", "reference batch 3", "eager: compiling", "eager: batch 2", "eager: batch 3"]
    assert [(m.group(3), m.group(4) is not None) for m in steps] == [(n, done) for n in names for done in (False, True)]
    assert [int(m.group(1)) for m in steps] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and {m.group(2) for m in steps} == {"5"}
    durations = {m.group(3): float(m.group(4)) for m in steps if m.group(4)}
    assert durations["eager: compiling"] >= 1.0, durations


def test_unknown_backend_is_an_error_before_the_run(capsys, monkeypatch):
    """A typo in --backends exits 2 with 'did you mean' before anything is compiled (it used to be a skipped row)."""
    import recfx.bench.runner

    monkeypatch.setattr(recfx.bench.runner, "build_workloads", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "--model", "dlrm-small", "--backends", "eager,indutor", *FAST]) == 2
    err = capsys.readouterr().err
    assert "unknown backend 'indutor'. Did you mean 'inductor'" in err and err.count("\n") == 1


def test_a_failed_compile_is_shown_whole_without_json_and_cut_with_it(tmp_path, capsys):
    """The end of an error often says what to do: without --json/--out the terminal is the only place to read it."""
    advice = "what to do: pass --calibration 4"

    @register_backend("test-cli-long-error")
    class LongError(EagerBackend):
        def compile(self, gm, ctx):
            raise ValueError("static scales need data\n" + "x" * 500 + "\n" + advice)

    try:
        argv = ["bench", "--model", "dlrm-small", "--backends", "test-cli-long-error", "--batch", "2", *FAST]
        assert main(argv) == 1
        out = capsys.readouterr().out
        assert advice in out and "full text in the JSON result" not in out
        assert main([*argv, "--json", str(tmp_path / "r.json")]) == 1
        out = capsys.readouterr().out
        assert advice not in out and "full text in the JSON result" in out
        assert advice in json.loads((tmp_path / "r.json").read_text())["rows"][0]["reason"]
    finally:
        BACKENDS.remove("test-cli-long-error")


def test_compare_prints_names_from_the_file_as_text_not_markup(tmp_path, capsys, monkeypatch):
    """A backend named like rich markup in the previous JSON is printed as written (it used to crash rich)."""
    import recfx.bench
    from recfx.bench import BenchResult, BenchRow
    from recfx.bench.export import write_json
    from recfx.bench.stats import summarize

    def result(*names):
        rows = [BenchRow(n, n, "ok", batch=4, latency_ms=summarize([1.0, 1.0]), throughput_rps=4.0) for n in names]
        return BenchResult("dlrm-small", "cpu", "fp32", {}, {}, rows, "2026-12-06T00:00:00Z", "0")

    write_json(result("eager", "[/bold]odd[red]"), tmp_path / "old.json")
    monkeypatch.setattr(recfx.bench, "run_bench", lambda *a, **k: result("eager"))
    assert main(["bench", "--model", "dlrm-small", "--backends", "eager", "--batch", "4", *FAST,
                 "--compare", str(tmp_path / "old.json")]) == 0
    assert "only in the previous run: ('[/bold]odd[red]', 4" in capsys.readouterr().out


def test_demo_summarises_the_fp8_module_its_bench_compiled(capsys, monkeypatch):
    """The FP8 summary comes from the module the bench compiled and timed (one FP8 compile, not two); without FP8
    tensor cores the demo's default model is the tiny one."""
    import torch

    import recfx
    from recfx.tools import demo

    compiles = []
    real = recfx.compile
    monkeypatch.setattr(recfx, "compile", lambda *a, **k: compiles.append(k.get("backend")) or real(*a, **k))
    assert main(["demo", "--model", "dlrm-small", "--backends", "eager-fp8", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert compiles == ["eager-fp8"] and out.count("FP8 (eager-fp8): 3 of 5 GEMMs quantized") == 1
    if not torch.cuda.is_available():
        assert demo.default_model() == "onerec-tiny"


def test_demo_summarises_an_fp8_module_served_from_the_compile_cache(tmp_path, capsys, monkeypatch):
    """With the compile cache on, the second demo's FP8 module is a loaded bundle: the summary is its stored report,
    and the table is printed either way."""
    monkeypatch.setenv("RECFX_COMPILE_CACHE", str(tmp_path / "cache"))
    for _ in range(2):
        assert main(["demo", "--model", "dlrm-small", "--backends", "eager-fp8", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("p50 ms") == 2 and "FP8 (eager-fp8): 3 of 5 GEMMs quantized" in out
    assert "FP8 (eager-fp8, loaded from" in out and "its compile report says" in out


def test_demo_explains_what_fp8_did_and_where_its_speed_comes_from():
    import torch

    import recfx
    from recfx.backends import resolve_backend
    from recfx.models import get_model
    from recfx.tools.demo import fp8_summary

    spec = get_model("dlrm-small")
    backend = resolve_backend("auto-fp8")[0].name
    text = fp8_summary(recfx.compile(spec.build(), spec.example_inputs(2), backend=backend))
    assert "3 of 5 GEMMs quantized" in text and "output cosine" in text and "in FP8 (with scales)" in text
    if not torch.cuda.is_available():  # no FP8 units: the demo must not sell emulated FP8 as the fast path
        assert "emulates FP8" in text and "cuda-fp8" in text
        assert "in float32" in text


def test_demo_summarises_a_cached_module_without_an_fx_graph(tmp_path):
    """A compile-cache hit of an Inductor FP8 backend is an AOTInductor bundle: no FX graph (``graph_module``
    raises); the summary is its stored report."""
    import recfx
    from recfx.models import get_model
    from recfx.tools.demo import fp8_summary

    spec = get_model("dlrm-small")
    loaded = recfx.load(recfx.compile(spec.build(), spec.example_inputs(2), backend="eager-fp8").save(tmp_path / "b"))
    loaded._modules["graph_module"] = None  # as AOTInductor's compiled code holds none
    assert not loaded.has_graph_module
    text = fp8_summary(loaded)
    assert text.startswith("FP8 (eager-fp8, loaded from") and "its compile report says" in text
