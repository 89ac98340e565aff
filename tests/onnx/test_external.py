"""External data is read only from plain files inside the model's folder: ``../``, absolute and symlinked locations
are refused (by the linter, ``recfx lint-onnx`` with exit 2, and before ONNX Runtime opens the file)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from recfx.onnx.external import ExternalDataError, check_external_data
from recfx.onnx.lint import lint_model
from recfx.onnx.session import session_for
from recfx.tools.cli import main


def _save_with_external_weight(folder: Path) -> Path:
    """A MatMul whose 4x4 weight lives in ``w.bin`` beside ``model.onnx``."""
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 4])], initializer=[weight])
    path = folder / "model.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)]), str(path), save_as_external_data=True,
              location="w.bin", size_threshold=0)
    return path


def _relocate(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(path))


def test_plain_file_beside_the_model_is_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _save_with_external_weight(tmp_path)
    check_external_data(onnx.load(str(path), load_external_data=False), tmp_path)
    assert lint_model(path).ok
    assert main(["lint-onnx", str(path)]) == 0
    x = np.ones((2, 4), np.float32)
    assert np.array_equal(session_for(path, ["CPUExecutionProvider"]).run(None, {"x": x})[0], x)


def _escape(tmp_path: Path, how: str) -> Path:
    inside, outside = tmp_path / "model", tmp_path / "outside"
    inside.mkdir(), outside.mkdir()
    path = _save_with_external_weight(inside)
    shutil.move(inside / "w.bin", outside / "w.bin")
    if how == "parent":
        _relocate(path, "../outside/w.bin")
    elif how == "absolute":
        _relocate(path, str(outside / "w.bin"))
    elif how == "symlink":
        os.symlink(outside / "w.bin", inside / "w.bin")
    elif how == "symlinked_folder":
        os.symlink(outside, inside / "data")
        _relocate(path, "data/w.bin")
    return path


@pytest.mark.parametrize("how", ["parent", "absolute", "symlink", "symlinked_folder"])
def test_data_outside_the_folder_is_refused(tmp_path, capsys, how: str) -> None:  # type: ignore[no-untyped-def]
    path = _escape(tmp_path, how)
    with pytest.raises(ExternalDataError, match="refusing to load: tensor 'w'"):
        lint_model(path)
    with pytest.raises(ExternalDataError, match="refusing to load"):
        session_for(path, ["CPUExecutionProvider"])
    assert main(["lint-onnx", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recfx lint-onnx: error: refusing to load") and "\n" not in err  # one line, no traceback
