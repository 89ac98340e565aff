"""The docstring examples of the ONNX modules run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["recfx.onnx", "recfx.onnx.export", "recfx.onnx.ir_passes", "recfx.onnx.lint",
                                  "recfx.onnx.metadata", "recfx.onnx.session", "recfx.onnx.translate",
                                  "recfx.backends.ort"])
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RECFX_CACHE_DIR", str(tmp_path))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
