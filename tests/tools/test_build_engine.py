"""``recfx build-engine``: profiles from an ONNX file's named dynamic dims (``--dry-run``, no TensorRT), clear
errors for bad options, and without TensorRT exit 2 saying what to install, writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from recfx.backends.tensorrt.availability import tensorrt_availability
from recfx.tools.cli import main


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    x = h.make_tensor_value_info("tokens", T.FLOAT, ["batch", "seq", 8])
    y = h.make_tensor_value_info("y", T.FLOAT, ["batch", "seq", 8])
    graph = h.make_graph([h.make_node("Relu", ["tokens"], ["y"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)]), str(path))
    return path


def test_dry_run_prints_named_profiles(onnx_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-engine", str(onnx_file), "--dry-run", "--example", "batch=4",
                 "--profile", "short@seq=16:128:512", "--profile", "long@seq=512:2048:8192"]) == 0
    short, long = json.loads(capsys.readouterr().out)
    assert short == {"name": "short", "shapes": {"tokens": [[1, 16, 8], [4, 128, 8], [16, 512, 8]]}}
    assert long["shapes"]["tokens"] == [[1, 512, 8], [4, 2048, 8], [16, 8192, 8]]


@pytest.mark.parametrize(("argv", "message"), [
    (["--profile", "batch=1:8:4"], "1 <= min <= opt <= max"),
    (["--profile", "batch=1:2:4"], "dynamic dim 'seq' has no range"),
    (["--profile", "heads=1:2:4", "--example", "batch=2", "--example", "seq=8"], "not dynamic dims"),
    (["--example", "seq"], "SYMBOL=N"),
    (["--opt-level", "9", "--example", "batch=2", "--example", "seq=8"], "optimization_level must be 0..5"),
])
def test_bad_options_exit_2_with_the_reason(onnx_file: Path, argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-engine", str(onnx_file), "--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(tensorrt_availability().ok, reason="TensorRT is installed here")
def test_without_tensorrt_says_what_to_install_and_writes_nothing(onnx_file: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "out.plan"
    assert main(["build-engine", str(onnx_file), "-o", str(plan), "--example", "batch=2", "--example", "seq=8"]) == 2
    err = capsys.readouterr().err
    assert "needs TensorRT" in err and "pip install tensorrt" in err
    assert not plan.exists() and not plan.with_name("out.plan.json").exists()


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-engine", str(tmp_path / "nope.onnx"), "--dry-run"]) == 2
    assert "no ONNX file" in capsys.readouterr().err
