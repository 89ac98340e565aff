"""The ONNX files that ``recfx build-engine`` hands to TensorRT pass the TensorRT-rules linter in strict mode
(``recfx lint-onnx --strict``: FP8 Q/DQ placement, plugin node attributes) for onerec-tiny and ksa-tiny, the
KsaAttention plugin nodes included (their name / namespace / version are what recfx's TensorRT plugin registers).
Uses this folder's session-cached exports; no TensorRT is needed or used."""

from __future__ import annotations

import json

import onnx
import pytest

from recfx.backends.tensorrt.ksa_plugin import ONNX_PLUGIN_ID, QDP_VERSION
from recfx.onnx.translate_ksa import KSA_PLUGIN
from recfx.tools.cli import main

CASES = [("onerec-tiny", False), ("onerec-tiny", True), ("ksa-tiny", False), ("ksa-tiny", True)]


@pytest.mark.parametrize(("name", "fp8"), CASES, ids=[f"{n}-{'fp8' if f else 'fp32'}" for n, f in CASES])
def test_lint_onnx_strict_passes(models, name: str, fp8: bool,  # type: ignore[no-untyped-def]
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = models.export(name, fp8).path
    capsys.readouterr()
    assert main(["lint-onnx", "--strict", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    model = onnx.load(str(path), load_external_data=False)
    types = {n.op_type for n in model.graph.node}
    assert ({"QuantizeLinear", "DequantizeLinear"} <= types) == fp8
    if name == "ksa-tiny":
        plugins = [n for n in model.graph.node if n.op_type == KSA_PLUGIN]
        assert len(plugins) == 3
        attrs = {a.name: a.s.decode() for a in plugins[0].attribute if a.type == onnx.AttributeProto.STRING}
        assert f"{attrs['plugin_namespace']}::{KSA_PLUGIN}" == ONNX_PLUGIN_ID
        assert attrs["plugin_version"] == QDP_VERSION
