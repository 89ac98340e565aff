"""The reference models export in fp32 and FP8, pass onnx.checker and the TensorRT linter, keep their op histogram,
and compute on ONNX Runtime what the compiled graph computes, at batch sizes 1, 3 and 8.

Tolerances (measured values in docs/onnx.md):
- fp32 ONNX vs the eager graph: max abs error <= 1e-4 x max(1, max |ref|); integer outputs identical.
- FP8 ONNX vs eager-fp8 (same quantization): cosine >= 0.9999 and max abs error <= 2% of max |ref| per float
  output (differences are FP8 rounding flips where float32 accumulation orders differ); integer outputs (OneRec's
  beam items) identical in >= 90% of positions (a flip can reorder near-tied beams).
- FP8 ONNX vs the fp32 model: cosine >= 0.99 per float output (the model-level FP8 target of the FP8 issue).

Set RECFX_UPDATE_GOLDENS=1 to rewrite golden_histograms.json after an intended change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
import torch

from recfx.analysis.numerics import cosine
from recfx.onnx import read_metadata
from recfx.onnx.session import OrtRunner
from recfx.passes.utils import op_histogram

MODELS = ("onerec-tiny", "ksa-tiny", "dlrm-small")
GOLDENS = Path(__file__).with_name("golden_histograms.json")


def _flat(out: object) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]  # type: ignore[arg-type]


def _runner(models, name: str, fp8: bool, static: bool = False) -> tuple[OrtRunner, object, object]:  # type: ignore[no-untyped-def]
    model, compiled = models.compile(name, "eager-fp8" if fp8 else "eager", static)
    export = models.export(name, fp8, ksa_as_ops=name.startswith("ksa"), static=static)
    runner = OrtRunner(export.path, [s.name for s in compiled.input_specs], [s.name for s in compiled.output_specs])
    return runner, compiled, model


@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
@pytest.mark.parametrize("name", MODELS)
def test_export_is_valid_and_lints_clean(models, name: str, fp8: bool) -> None:  # type: ignore[no-untyped-def]
    export = models.export(name, fp8)
    onnx.checker.check_model(str(export.path), full_check=True)
    proto = onnx.load(str(export.path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 21
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert export.lint is not None and export.lint.ok, export.lint.render()
    meta = read_metadata(export.path)
    assert meta["recfx.model"] == name and meta["recfx.precision"] == ("fp8" if fp8 else "fp32")
    _, compiled = models.compile(name, "eager-fp8" if fp8 else "eager")
    fp8_gemms = op_histogram(compiled.graph_module).get("recfx.fp8_linear.default", 0)
    assert export.lint.counts["quantized_gemms"] == fp8_gemms
    if fp8:
        assert fp8_gemms > 0 and json.loads(meta["recfx.quant_config"])["activation"] == "dynamic_per_token"
        weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT8E4M3FN
                   and len(t.dims) == 2]
        gm = compiled.graph_module
        fp8_weights = {n.args[1].target for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_linear.default}
        assert len(weights) == len(fp8_weights)  # pre-quantized FP8 initializers (OneRec's 3 steps share theirs)
    if name.startswith("ksa"):
        assert export.plugins == ["KsaAttention"]
        assert export.histogram["trt.plugins::KsaAttention"] == 3  # the 3 KSA layers of ksa-tiny (1 full layer)


@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
@pytest.mark.parametrize("name", MODELS)
def test_op_histogram_golden(models, name: str, fp8: bool) -> None:  # type: ignore[no-untyped-def]
    key = f"{name}/{'fp8' if fp8 else 'fp32'}"
    got = models.export(name, fp8).histogram
    goldens = json.loads(GOLDENS.read_text()) if GOLDENS.exists() else {}
    if os.environ.get("RECFX_UPDATE_GOLDENS"):
        goldens[key] = got
        GOLDENS.write_text(json.dumps(goldens, indent=1, sort_keys=True) + "\n")
    assert key in goldens, f"no golden for {key}; run with RECFX_UPDATE_GOLDENS=1"
    assert got == goldens[key]


@pytest.mark.parametrize("name", ["onerec-tiny", "dlrm-small"])  # ksa fp32 on ORT: tests/onnx/test_translate_ksa.py
def test_fp32_onnx_runtime_matches_eager(models, name: str) -> None:  # type: ignore[no-untyped-def]
    runner, compiled, _ = _runner(models, name, fp8=False)
    spec, _, _ = models.model(name)
    for batch in models.batches:
        inputs = spec.example_inputs(batch, seed=batch)
        got, want = _flat(runner(*inputs)), _flat(compiled(*inputs))
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == w.dtype
            if w.is_floating_point():
                assert (g - w).abs().max() <= 1e-4 * max(1.0, float(w.abs().max()))
            else:
                assert torch.equal(g, w)


@pytest.mark.parametrize("name", MODELS)
def test_fp8_onnx_runtime_matches_eager_fp8(models, name: str) -> None:  # type: ignore[no-untyped-def]
    runner, compiled, model = _runner(models, name, fp8=True)
    spec, _, _ = models.model(name)
    for batch in models.batches:
        inputs = spec.example_inputs(batch, seed=batch)
        got = _flat(runner(*inputs))
        with torch.inference_mode():
            ref = _flat(model(*inputs))
        # eager-fp8's reference kernels are slow at batch 8 (float64 rounding): compare with it at 1 and 3
        want = _flat(compiled(*inputs)) if batch < 8 else ref
        for g, w, r in zip(got, want, ref):
            assert g.shape == w.shape and g.dtype == w.dtype
            if not w.is_floating_point():
                assert batch == 8 or (g == w).double().mean() >= 0.9
                continue
            assert cosine(g.double(), r.double()) >= 0.99  # the FP8 issue's model-level target
            if batch < 8:
                assert cosine(g.double(), w.double()) >= 0.9999
                assert (g - w).abs().max() <= 0.02 * float(w.abs().max())


def test_static_activation_export(models) -> None:  # type: ignore[no-untyped-def]
    """Calibrated per-tensor activation scales: static scales in every Q (no run-time ReduceMax), lint clean, and
    ONNX Runtime agrees with eager-fp8 compiled with the same calibration."""
    export = models.export("dlrm-small", fp8=True, static=True)
    assert export.lint is not None and export.lint.ok, export.lint.render()
    assert "ReduceMax" not in export.histogram and export.histogram["QuantizeLinear"] == 3
    assert json.loads(export.metadata["recfx.quant_config"])["activation"] == "static_per_tensor"
    runner, compiled, _ = _runner(models, "dlrm-small", fp8=True, static=True)
    spec, _, _ = models.model("dlrm-small")
    for batch in models.batches:
        inputs = spec.example_inputs(batch, seed=batch)
        got, want = runner(*inputs), compiled(*inputs)
        assert (got - want).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))  # measured: 0 (bit-exact)
