"""``recfx bench`` and ``recfx demo`` end to end: tables, files, exit statuses (compare, failures, gates, bad input)."""

import json
import re

import pytest

from recfx.backends import BACKENDS, register_backend
from recfx.backends.eager import EagerBackend
from recfx.bench import load_result
from recfx.tools.cli import main

FAST = ["--iters", "2", "--warmup", "1", "--time-budget", "0", "--quiet"]


def test_onerec_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["bench", "--model", "onerec-tiny", "--backends", "eager,trt-fp8", "--batch", "2", "--compact",
                 "--out", str(out), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
                 "--plot", str(tmp_path / "r.png"), *FAST])
    text = capsys.readouterr().out
    assert code == 0
    assert "onerec-tiny" in text and "top-k" in text and "100.0%" in text
    assert "skipped trt-fp8: not registered in this build" in text
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


def test_out_that_is_a_file_fails_before_the_run(tmp_path, capsys, monkeypatch):
    import recfx.bench

    (tmp_path / "taken").write_text("")
    monkeypatch.setattr(recfx.bench, "run_bench", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "--model", "dlrm-small", "--out", str(tmp_path / "taken"), *FAST]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_progress_is_one_line_per_step_when_stderr_is_not_a_terminal(capsys):
    """Logs and pipes get timestamped step lines (a run cut short still shows where its time went)."""
    argv = ["bench", "--model", "dlrm-small", "--backends", "eager", "--batch", "2,3", "--iters", "2", "--warmup", "1",
            "--time-budget", "0"]
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]
    steps = [re.match(r"\[\d\d:\d\d:\d\d\] \+\d+\.\ds (\d+)/(\d+) (.+)$", ln) for ln in lines]
    assert all(steps), lines
    assert [m.group(3) for m in steps] == ["reference batch 2", "reference batch 3", "eager: compiling",
                                           "eager: batch 2", "eager: batch 3"]
    assert [int(m.group(1)) for m in steps] == [0, 1, 2, 3, 4] and {m.group(2) for m in steps} == {"5"}


def test_demo_explains_what_fp8_did_and_where_its_speed_comes_from():
    import torch

    from recfx.tools.demo import fp8_summary

    text = fp8_summary("dlrm-small")
    assert "3 of 5 GEMMs quantized" in text and "output cosine" in text and "in FP8 (with scales)" in text
    if not torch.cuda.is_available():  # no FP8 units: the demo must not sell emulated FP8 as the fast path
        assert "emulates FP8" in text and "cuda-fp8" in text
