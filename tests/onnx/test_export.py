"""``recfx.export_onnx``: the API on small models, metadata, and every bad input (clear error, nothing written)."""

from __future__ import annotations

import json
import os

import onnx
import pytest
import torch

import recfx
from recfx import export_onnx
from recfx.onnx import OnnxExportConfig, OnnxExportError, OnnxLintError, read_metadata
from recfx.onnx.metadata import calibration_hash
from recfx.ops.fp8 import quantize_weight


@torch.library.custom_op("recfx_onnx_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    return x * 3


@mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Mystery(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.recfx_onnx_test.mystery(torch.relu(x)) + 1  # the line the error must point at


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


class BlockScaled(torch.nn.Module):
    """An FP8 block-scaled linear: valid ONNX, but not a TensorRT Q/DQ pattern (the linter objects)."""

    def __init__(self) -> None:
        super().__init__()
        w_q, w_s = quantize_weight(torch.randn(64, 64), "block", 32)
        self.register_buffer("w_q", w_q)
        self.register_buffer("w_s", w_s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.recfx.fp8_linear_blocks(x, self.w_q, self.w_s, None, 32)


def _files(folder: os.PathLike[str]) -> list[str]:
    return sorted(os.listdir(folder))


def test_fp32_module_export(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = export_onnx(Mlp().eval(), (torch.randn(2, 32),), tmp_path / "mlp.onnx")
    assert out.histogram == {"Gemm": 2, "Relu": 1} and not out.fp8 and out.lint.ok
    meta = read_metadata(out.path)
    assert meta["recfx.version"] == recfx.__version__ and meta["recfx.model"] == "Mlp"
    assert meta["recfx.backend"] == "eager" and meta["recfx.precision"] == "fp32"
    assert meta["recfx.quant_config"] == "none" and meta["recfx.calibration_hash"] == "none"
    assert json.loads(meta["recfx.export_config"])["opset"] == 21
    assert json.loads(meta["recfx.inputs"]) == ["x: float32[batch, 32]"]
    assert _files(tmp_path) == ["mlp.onnx"]  # no temporary left behind
    assert "wrote" in out.summary() and "Gemm 2" in out.summary()


def test_fp8_module_export_and_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    calibration = [(torch.randn(4, 32),) for _ in range(2)]
    config = OnnxExportConfig(fp8=True, static_activations=True, model_name="mlp")
    quant = recfx.QuantConfig(progress=False, default_exclusions=False)
    out = export_onnx(Mlp().eval(), (torch.randn(2, 32),), tmp_path / "mlp8.onnx", config,
                      calibration=calibration, quant=quant)
    assert out.fp8 and out.lint.ok and out.histogram["QuantizeLinear"] == 2
    meta = read_metadata(out.path)
    assert meta["recfx.backend"] == "eager-fp8" and meta["recfx.precision"] == "fp8" and meta["recfx.model"] == "mlp"
    assert json.loads(meta["recfx.quant_config"])["activation"] == "static_per_tensor"
    assert meta["recfx.calibration_hash"] == calibration_hash(calibration).split(" ")[0]
    assert meta["recfx.calibration_hash"] != calibration_hash([(torch.randn(4, 32),)])


def test_compiled_module_export_keeps_its_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inputs = (torch.randn(2, 32),)
    compiled = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8",
                             quant=recfx.QuantConfig(progress=False, default_exclusions=False))
    out = export_onnx(compiled, inputs, tmp_path / "c.onnx")  # fp8 follows the graph
    assert out.fp8 and read_metadata(out.path)["recfx.quant_config"] != "none"
    static = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8", calibration=[inputs],
                           quant=recfx.QuantConfig(activation="static_per_tensor", progress=False,
                                                   default_exclusions=False))
    out = export_onnx(static, inputs, tmp_path / "s.onnx")  # calibrated, but the data is not at hand
    assert read_metadata(out.path)["recfx.calibration_hash"].startswith("unknown")


def test_static_shapes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    export_onnx(Mlp().eval(), (torch.randn(2, 32),), tmp_path / "s.onnx", OnnxExportConfig(dynamic=False))
    dims = onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 32]


def test_op_without_translation_lists_it_with_its_source_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OnnxExportError) as err:
        export_onnx(Mystery().eval(), (torch.randn(2, 4),), tmp_path / "m.onnx")
    text = str(err.value)
    assert "recfx_onnx_test::mystery (1 node)" in text and "test_export.py" in text
    assert "the line the error must point at" in text and "No file was written" in text
    assert _files(tmp_path) == []


class NoOnnxAten(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = torch.kthvalue(x, 2, dim=-1).values  # kthvalue: no ONNX form
        return torch.cummax(x, -1).values + low[..., None]  # cummax: no ONNX form either


def test_aten_ops_without_translation_are_all_listed_with_their_source_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OnnxExportError) as err:
        export_onnx(NoOnnxAten().eval(), (torch.randn(2, 4),), tmp_path / "m.onnx")
    text = str(err.value)
    assert "2 op(s) have no ONNX translation" in text and "No file was written" in text
    assert "aten::kthvalue (1 node)" in text and "kthvalue: no ONNX form" in text
    assert "aten::cummax (1 node)" in text and "cummax: no ONNX form either" in text
    assert _files(tmp_path) == []


def test_unwritable_paths_fail_before_any_work(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model, inputs = Mlp().eval(), (torch.randn(2, 32),)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(model, inputs, tmp_path / "missing" / "m.onnx")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        export_onnx(model, inputs, tmp_path)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # tests run as root, which may write anywhere
    with pytest.raises(PermissionError, match="not writable"):
        export_onnx(model, inputs, tmp_path / "m.onnx")
    assert _files(tmp_path) == []


def test_fp8_needs_opset_21(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="opset >= 21"):
        OnnxExportConfig(fp8=True, opset=19)
    inputs = (torch.randn(2, 32),)
    compiled = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8",
                             quant=recfx.QuantConfig(progress=False, default_exclusions=False))
    with pytest.raises(ValueError, match="need opset >= 21"):
        export_onnx(compiled, inputs, tmp_path / "m.onnx", OnnxExportConfig(opset=19))
    assert _files(tmp_path) == []


def test_bad_requests(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inputs = (torch.randn(2, 32),)
    fp32 = recfx.compile(Mlp().eval(), inputs, backend="eager")
    with pytest.raises(ValueError, match="holds no FP8 ops"):
        export_onnx(fp32, inputs, tmp_path / "m.onnx", OnnxExportConfig(fp8=True))
    with pytest.raises(ValueError, match="needs calibration"):
        export_onnx(Mlp().eval(), inputs, tmp_path / "m.onnx", OnnxExportConfig(fp8=True, static_activations=True))
    dynamic = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8",
                            quant=recfx.QuantConfig(progress=False, default_exclusions=False))
    with pytest.raises(ValueError, match="quantizes activations at run time"):
        export_onnx(dynamic, inputs, tmp_path / "m.onnx", OnnxExportConfig(fp8=True, static_activations=True))
    with pytest.raises(ValueError, match="static_activations only applies"):
        OnnxExportConfig(static_activations=True)
    with pytest.raises(ValueError, match="lint must be"):
        OnnxExportConfig(lint="loud")
    with pytest.raises(TypeError, match="nn.Module or a recfx CompiledModule"):
        export_onnx("model", inputs, tmp_path / "m.onnx")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be tensors"):
        export_onnx(Mlp().eval(), ([1.0],), tmp_path / "m.onnx")
    assert _files(tmp_path) == []


def test_strict_lint_writes_nothing(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    inputs = (torch.randn(2, 64),)
    compiled = recfx.compile(BlockScaled().eval(), inputs, backend="eager")
    with pytest.raises(OnnxLintError, match=r"\[scale\]"):
        export_onnx(compiled, inputs, tmp_path / "b.onnx", OnnxExportConfig(lint="strict"))
    assert _files(tmp_path) == []
    out = export_onnx(compiled, inputs, tmp_path / "b.onnx")  # lint="warn": written, findings logged
    assert not out.lint.ok and _files(tmp_path) == ["b.onnx"]
    assert any("TensorRT fuses per-tensor and per-channel" in r.message for r in caplog.records)


class AliasedOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = x.relu()
        return y, x, y  # an output that is the input, and one output twice


def test_outputs_aliasing_inputs_or_each_other_get_their_own_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "alias.onnx"
    export_onnx(AliasedOutputs().eval(), (torch.randn(2, 3),), path)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["x"]
    assert [o.name for o in graph.output] == ["output_0", "output_1", "output_2"]
    import onnxruntime as ort

    x = torch.randn(4, 3)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    for g, w in zip(got, AliasedOutputs()(x)):
        torch.testing.assert_close(torch.from_numpy(g), w)


def test_fp8_export_when_the_policy_excluded_every_gemm_names_the_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recfx.passes.quant import QuantRule

    inputs = (torch.randn(2, 32),)
    compiled = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8",
                             quant=recfx.QuantConfig(rules=(QuantRule("exclude", path="*"),)))
    with pytest.raises(ValueError, match=r"the FP8 policy excluded all \d+ GEMMs \(.*exclude\(path='\*'\)"):
        export_onnx(compiled, inputs, tmp_path / "m.onnx", OnnxExportConfig(fp8=True))
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_layer_export_takes_compiled_modules_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recfx.onnx import export_onnx as export_compiled

    inputs = (torch.randn(2, 32),)
    with pytest.raises(TypeError, match="takes a recfx CompiledModule.*recfx.export_onnx compiles an nn.Module"):
        export_compiled(Mlp().eval(), inputs, tmp_path / "m.onnx")  # type: ignore[arg-type]
    compiled = recfx.compile(Mlp().eval(), inputs, backend="eager")
    with pytest.raises(ValueError, match="quant= applies when export_onnx compiles an nn.Module"):
        export_onnx(compiled, inputs, tmp_path / "m.onnx", quant=recfx.QuantConfig())
    assert _files(tmp_path) == []


def test_quant_config_metadata_comes_from_the_compiled_module(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # the quant config travels in CompiledModule.quant_config, not found by probing report sections
    inputs = (torch.randn(2, 32),)
    quant = recfx.QuantConfig(progress=False, default_exclusions=False, weight="per_tensor")
    compiled = recfx.compile(Mlp().eval(), inputs, backend="eager-fp8", quant=quant)
    compiled.report.sections.clear()
    out = export_onnx(compiled, inputs, tmp_path / "q.onnx")
    assert json.loads(read_metadata(out.path)["recfx.quant_config"]) == quant.to_dict()
