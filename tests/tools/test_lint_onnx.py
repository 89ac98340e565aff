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


def _lint_exit_and_message(path, capsys) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code = main(["lint-onnx", str(path), "--strict"])
    captured = capsys.readouterr()
    assert captured.out == "", captured.out  # no report ("TensorRT rules: OK") for a file that was refused
    return code, captured.err


def test_empty_and_cut_short_files_exit_2_with_one_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Protobuf parses an empty file (and one cut at a field boundary) as a model: the linter must not pass it."""
    data = _qdq_model(0.5).SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(0, len(data)):  # every possible truncation
        path.write_bytes(data[:cut])
        code, err = _lint_exit_and_message(path, capsys)
        assert code == 2 and err.count("\n") == 1, (cut, err)
        assert "empty" in err if cut == 0 else ("cut short" in err or "not a valid ONNX model" in err), (cut, err)


def test_corrupt_file_message_holds_no_tensor_contents(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A node whose attribute is corrupt: onnx's own messages print the node with its tensor; ours is one line."""
    import numpy as np
    from onnx import numpy_helper

    model = _qdq_model(0.5)
    big = numpy_helper.from_array(np.full(1000, 1234.5, dtype=np.float32), "big")
    model.graph.node.insert(0, h.make_node("Constant", [], ["c"], name="c", value=big))
    model.graph.node[0].attribute[0].type = onnx.AttributeProto.FLOATS  # says floats, holds a tensor
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(model.SerializeToString())
    code, err = _lint_exit_and_message(path, capsys)
    assert code == 2 and err.count("\n") == 1 and len(err) < 500, err
    assert "1234.5" not in err and "raw_data" not in err


def _external_model(folder, location: str):  # type: ignore[no-untyped-def]
    """A model whose scale ``s`` is stored as external data at ``location`` (relative to ``folder``)."""
    import numpy as np
    from onnx import numpy_helper

    model = _qdq_model(0.5)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), "s"))  # raw data
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="data.bin", size_threshold=0, convert_attribute=True)
    model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (folder / "m.onnx").write_bytes(model.SerializeToString())
    return folder / "m.onnx"


def test_external_data_outside_the_folder_is_refused(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _external_model(model_dir, "data.bin")
    assert main(["lint-onnx", str(path), "--strict"]) == 0  # inside the folder: read
    capsys.readouterr()
    (tmp_path / "data.bin").write_bytes((model_dir / "data.bin").read_bytes())  # the same bytes, outside
    (model_dir / "data.bin").unlink()
    for location in ("../data.bin", str(tmp_path / "data.bin")):
        _external_model(model_dir, location)
        code, err = _lint_exit_and_message(path, capsys)
        assert code == 2 and "refusing to load" in err and err.count("\n") == 1, err
    _external_model(model_dir, "data.bin")
    (model_dir / "data.bin").unlink()
    (model_dir / "data.bin").symlink_to(tmp_path / "data.bin")  # a symlink leading out
    code, err = _lint_exit_and_message(path, capsys)
    assert code == 2 and "symlink" in err, err
