"""``recfx::ksa_attention`` exports as the ``KsaAttention`` TensorRT plugin node, or (``ksa_as_ops``) as standard ONNX
ops that ONNX Runtime runs: those agree with the op's float64-checked reference within 1e-5 (float32 softmax)."""

from __future__ import annotations

import onnx
import pytest
import torch

from recfx.onnx import OnnxExportConfig

CHUNK, SUMMARIES, WINDOW = 4, 1, 1


class Attention(torch.nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = torch.ops.recfx.ksa_attention(q, k, v, CHUNK, SUMMARIES, WINDOW, q.shape[-1] ** -0.5)
        return out * 2.0, lse


def _inputs(batch: int, length: int) -> tuple[torch.Tensor, ...]:
    return torch.randn(batch, length, 4, 8), torch.randn(batch, length, 2, 8), torch.randn(batch, length, 2, 8)


DYNAMIC = {name: {0: "batch", 1: "seq"} for name in ("q", "k", "v")}


def test_plugin_node(tmp_path, export_module) -> None:  # type: ignore[no-untyped-def]
    lint, runner, hist = export_module(Attention(), _inputs(2, 10), tmp_path / "ksa.onnx", dynamic_dims=DYNAMIC)
    assert runner is None and hist["trt.plugins::KsaAttention"] == 1 and lint.ok
    model = onnx.load(str(tmp_path / "ksa.onnx"))
    onnx.checker.check_model(model, full_check=True)
    node = next(n for n in model.graph.node if n.op_type == "KsaAttention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.domain == "trt.plugins" and len(node.input) == 3 and len(node.output) == 2
    assert attrs == {"plugin_version": b"1", "plugin_namespace": b"recfx", "chunk_size": CHUNK,
                     "summaries": SUMMARIES, "window": WINDOW, "scale": pytest.approx(8 ** -0.5)}
    assert {o.domain: o.version for o in model.opset_import}["trt.plugins"] == 1
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim[:2]]
    assert dims == ["batch", "seq"]


def test_as_standard_ops_on_onnx_runtime(tmp_path, export_module) -> None:  # type: ignore[no-untyped-def]
    module = Attention()
    lint, runner, hist = export_module(module, _inputs(2, 10), tmp_path / "ksa.onnx",
                                       OnnxExportConfig(ksa_as_ops=True), dynamic_dims=DYNAMIC)
    assert lint.ok and not any("::" in op for op in hist) and "ReduceLogSumExp" in hist
    for batch, length in ((1, 7), (3, 13), (2, 25)):  # lengths crossing chunk and window boundaries
        inputs = _inputs(batch, length)
        (out, lse), (want_out, want_lse) = runner(*inputs), module(*inputs)
        assert out.shape == want_out.shape and lse.shape == want_lse.shape
        assert (out - want_out).abs().max() <= 1e-5 and (lse - want_lse).abs().max() <= 1e-5
