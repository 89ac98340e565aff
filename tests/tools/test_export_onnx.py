"""``recfx export-onnx``: writes a checked, linted file; bad options exit with status 2 and write nothing."""

from __future__ import annotations

import json
import os

import onnx
import pytest

from recfx.onnx import read_metadata
from recfx.tools.cli import main


def test_export_fp32(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dlrm.onnx"
    assert main(["export-onnx", "dlrm-small", "-o", str(path)]) == 0
    onnx.checker.check_model(str(path), full_check=True)
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "TensorRT rules: OK" in out
    assert read_metadata(path)["recfx.model"] == "dlrm-small"


def test_export_fp8_static_activations(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dlrm8.onnx"
    code = main(["export-onnx", "dlrm-small", "-o", str(path), "--fp8", "--static-activations",
                 "--calibration-batches", "2", "--calibrator", "percentile", "--strict"])
    assert code == 0
    meta = read_metadata(path)
    quant = json.loads(meta["recfx.quant_config"])
    assert quant["activation"] == "static_per_tensor" and quant["calibrator"] == "percentile"
    assert meta["recfx.calibration_hash"].startswith("sha256:")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_bad_options_write_nothing(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "x.onnx")
    assert main(["export-onnx", "dlrm-small", "-o", path, "--static-activations"]) == 2
    assert "--static-activations needs --fp8" in capsys.readouterr().err
    assert main(["export-onnx", "dlrm-small", "-o", path, "--fp8", "--opset", "19"]) == 2
    assert "opset >= 21" in capsys.readouterr().err
    assert main(["export-onnx", "dlrm-small", "-o", str(tmp_path / "no" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export-onnx", "no-such-model", "-o", path]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_extra_dynamic_dims_from_a_factory(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import sys
    import types

    import torch

    module = types.ModuleType("recfx_onnx_cli_factory")
    module.build = lambda: (torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval(),  # type: ignore[attr-defined]
                            (torch.randn(2, 5, 8),))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "f.onnx"
    assert main(["export-onnx", f"{module.__name__}:build", "-o", str(path), "--dynamic", "input:1:seq"]) == 0
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", 8]
    with pytest.raises(SystemExit) as exit_:  # argparse rejects the malformed option
        main(["export-onnx", f"{module.__name__}:build", "-o", str(path), "--dynamic", "input-1"])
    assert exit_.value.code == 2
