"""``recfx lint-onnx FILE``: prints the TensorRT-rules report; --strict fails on violations; bad files exit 2."""

from __future__ import annotations

import json

import onnx
from onnx import TensorProto as T
from onnx import helper as h

from recfx.tools.cli import main


def _qdq_model(scale: float) -> onnx.ModelProto:
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             h.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dq"),
             h.make_node("MatMul", ["d", "d"], ["y"], name="mm")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [4, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [4, 4])],
                         initializer=[h.make_tensor("s", T.FLOAT, [], [scale]),
                                      h.make_tensor("zp", T.FLOAT8E4M3FN, [], [0.0])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])


def test_clean_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ok.onnx"
    onnx.save(_qdq_model(0.5), str(path))
    assert main(["lint-onnx", str(path), "--strict"]) == 0
    assert "TensorRT rules: OK (1 Q, 1 DQ, 1/1 GEMMs quantized, 0 plugins)" in capsys.readouterr().out


def test_violations(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.onnx"
    onnx.save(_qdq_model(-0.5), str(path))
    assert main(["lint-onnx", str(path)]) == 0
    assert "[scale] error: QuantizeLinear 'q'" in capsys.readouterr().out
    assert main(["lint-onnx", str(path), "--strict"]) == 1
    capsys.readouterr()
    assert main(["lint-onnx", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and {f["rule"] for f in report["findings"]} == {"scale"}


def test_unreadable_files(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lint-onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "no ONNX file" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00not a model")
    assert main(["lint-onnx", str(junk)]) == 2
    assert "is not an ONNX model" in capsys.readouterr().err
