"""A granularity added from outside recfx: one descriptor and one ``register_granularity`` call, no other change.

Two are defined here and nowhere else, each run end to end through ``recfx.compile(..., backend="eager-fp8")``:

- ``per_channel_pow2``: per-channel weight scales rounded up to powers of two (a multiply by a scale is then an
  exponent shift); it folds into ``recfx::fp8_linear``, like ``per_channel``.
- ``group``: weights quantized in 1 x B groups along K (scale ``[N, ceil(K/B)]``); with ``activation="block"`` and
  ``block_size=64`` this is the "per-group 1x64" recipe, folded into ``recfx::fp8_linear_blocks``.

An activation mode registers the same way (``dynamic_per_row``, the per-token recipe under another name).

Each is also checked where the rest of recfx meets it: QuantConfig / QuantRule validation and pairing, the report's
label, TensorRT's partition, the ONNX export on ONNX Runtime, and the CLI's choices; and the registries are left as
they were.

Thresholds: the model output against the float64 model, SQNR >= 22 dB and cosine >= 0.997 (three FP8 GEMMs in a
row, each quantizing weights and activations, measured 24.9-25.5 dB and 0.9984-0.9986 here for all four recipes),
and within 1.5 dB of the built-in granularity the new one varies (measured: pow2 0.13 dB below per_channel, powers
of two waste at most one bit of range, which E4M3's floating point mostly absorbs; 1x64 groups 0.24 dB below 64x64
blocks on this Gaussian data).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

import recfx
from recfx.analysis.numerics import cosine, sqnr_db
from recfx.backends.tensorrt.partition import plan_partition
from recfx.ops.fp8 import block_amax, quantize_weight, scale_from_amax
from recfx.ops.fp8_terms import (
    ACTIVATION_MODES,
    FP8_LINEAR,
    FP8_LINEAR_BLOCKS,
    WEIGHT_GRANULARITIES,
    ActivationMode,
    Call,
    WeightGranularity,
    register_granularity,
    unregister_granularity,
)
from recfx.passes.quant.calibrators import CALIBRATORS, register_calibrator
from recfx.passes.utils import op_histogram

MIN_SQNR_DB = 22.0
MIN_COSINE = 0.997
#: How far below the built-in granularity's SQNR the new one may land.
SQNR_SLACK_DB = 1.5


def _pow2_scales(w: Tensor, block_size: int) -> Tensor:
    s = scale_from_amax(w.abs().amax(dim=1, keepdim=True))  # (N, 1)
    return torch.exp2(torch.ceil(torch.log2(s)))  # rounded up: |w| / s stays <= 448, nothing saturates


def _group_scales(w: Tensor, block_size: int) -> Tensor:
    return scale_from_amax(block_amax(w, (1, block_size)))  # (N, ceil(K/B))


def _row_groups(block_size: object) -> list[object]:
    return [1, block_size]


PER_CHANNEL_POW2 = WeightGranularity("per_channel_pow2", "[N, 1]", "pow2", FP8_LINEAR, _pow2_scales,
                                     onnx="per-axis, as per_channel")
WEIGHT_GROUPS = WeightGranularity("group", "[N, ceil(K/B)]", "group", FP8_LINEAR_BLOCKS, _group_scales,
                                  blocks=_row_groups, onnx="blocked: axis=1, block_size=B")


@pytest.fixture(params=[PER_CHANNEL_POW2, WEIGHT_GROUPS], ids=lambda g: g.name)
def granularity(request: pytest.FixtureRequest) -> Iterator[WeightGranularity]:
    g = register_granularity(request.param)
    try:
        yield g
    finally:
        unregister_granularity(g)
    assert g.name not in WEIGHT_GRANULARITIES  # no trace for the other tests
    with pytest.raises(ValueError, match=f"unknown weight {g.name!r}"):
        recfx.QuantConfig(weight=g.name)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.mid, self.down = nn.Linear(128, 256), nn.Linear(256, 192), nn.Linear(192, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(torch.relu(self.mid(torch.relu(self.up(x)))))  # (B, T, 64)


def _compile(model: nn.Module, x: Tensor, **quant: object) -> tuple[Tensor, recfx.CompiledModule]:
    cfg = recfx.QuantConfig(default_exclusions=False, progress=False, **quant)  # type: ignore[arg-type]
    compiled = recfx.compile(model, (x,), backend="eager-fp8", quant=cfg)
    return compiled(x), compiled


def _problem() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = Mlp().eval()
    x = torch.randn(2, 8, 128)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
    return model, x, ref


def test_registered_granularity_compiles_end_to_end(granularity: WeightGranularity) -> None:
    model, x, ref = _problem()
    gemm = granularity.gemm
    blocked = {"activation": "block", "block_size": 64} if gemm is FP8_LINEAR_BLOCKS else {}
    builtin = "block" if gemm is FP8_LINEAR_BLOCKS else "per_channel"  # the built-in with the same GEMM
    y, compiled = _compile(model, x, weight=granularity.name, **blocked)
    y_builtin, _ = _compile(model, x, weight=builtin, **blocked)

    hist = op_histogram(compiled.graph_module)
    assert hist.get(f"recfx.{gemm.op_name}.default") == 3 and "aten.linear.default" not in hist
    gemms = [n for n in compiled.graph_module.graph.nodes if n.target is gemm.op]
    for node, linear in zip(gemms, (model.up, model.mid, model.down)):  # the buffers are the descriptor's
        w_q, w_s = (getattr(compiled.graph_module, str(a.target)) for a in node.args[1:3])
        want_q, want_s = quantize_weight(linear.weight, granularity.name, 64)
        assert torch.equal(w_s, want_s) and torch.equal(w_q.float(), want_q.float())
        assert list(w_s.shape) == ([linear.out_features, 1] if gemm is FP8_LINEAR
                                   else [linear.out_features, linear.in_features // 64])
    if granularity is PER_CHANNEL_POW2:
        assert bool((torch.frexp(w_s)[0] == 0.5).all())  # every scale a power of two
    assert sqnr_db(ref, y) >= MIN_SQNR_DB and cosine(ref, y) >= MIN_COSINE
    assert sqnr_db(ref, y) >= sqnr_db(ref, y_builtin) - SQNR_SLACK_DB
    assert not torch.equal(y, y_builtin)  # a different recipe, not the built-in under another name
    row = compiled.report.sections["fp8"].render()
    assert f"{granularity.short} / " in row  # the report's label comes from the descriptor
    trt = {d.node: d.reason for d in plan_partition(compiled.graph_module, lambda node: True).fallback}
    want = {n.name: gemm.tensorrt for n in gemms} if gemm.tensorrt else {}  # TensorRT asks the GEMM's descriptor
    assert trt == want


def test_registered_granularity_pairs_only_with_its_gemm(granularity: WeightGranularity) -> None:
    wrong = "dynamic_per_token" if granularity.gemm is FP8_LINEAR_BLOCKS else "block"
    with pytest.raises(ValueError, match=f"recfx::{granularity.gemm.op_name}"):
        recfx.QuantConfig(weight=granularity.name, activation=wrong)
    rule = recfx.QuantRule("include", path="mid", weight=granularity.name)
    assert recfx.QuantConfig(rules=(rule,)).rules[0].weight == granularity.name


def test_registering_twice_or_with_an_unregistered_gemm_fails() -> None:
    register_granularity(PER_CHANNEL_POW2)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_granularity(PER_CHANNEL_POW2)
    finally:
        unregister_granularity(PER_CHANNEL_POW2)
    stray = WeightGranularity("stray", "[N, 1]", "stray", recfx.ops.fp8_terms.Fp8Gemm("my_gemm", lambda *a: a),
                              _pow2_scales)
    with pytest.raises(ValueError, match="not a registered one"):
        register_granularity(stray)
    assert "stray" not in WEIGHT_GRANULARITIES


def test_registered_calibrator_is_accepted_and_used() -> None:
    """``register_calibrator`` adds a choice that ``QuantConfig`` validates against and calibration calls."""
    model, x, _ = _problem()
    seen: list[float] = []

    @register_calibrator("test_half_max")
    def half_max(stats: object, percentile: float) -> float:
        seen.append(stats.abs_max)  # type: ignore[attr-defined]
        return 0.5 * stats.abs_max  # type: ignore[attr-defined]

    try:
        cfg = recfx.QuantConfig(activation="static_per_tensor", calibrator="test_half_max", default_exclusions=False,
                                progress=False)
        compiled = recfx.compile(model, (x,), backend="eager-fp8", quant=cfg, calibration=[(x,)])
    finally:
        CALIBRATORS.remove("test_half_max")
    first = next(n for n in compiled.graph_module.graph.nodes if n.target is FP8_LINEAR.op)
    x_scale = getattr(compiled.graph_module, str(first.args[4].target))
    assert seen and torch.equal(x_scale, scale_from_amax(0.5 * x.abs().max().double()))  # `up` reads x itself
    with pytest.raises(ValueError, match="unknown calibrator 'test_half_max'"):
        recfx.QuantConfig(calibrator="test_half_max")


def test_cli_choices_come_from_the_registries(granularity: WeightGranularity) -> None:
    import argparse

    import recfx.tools.export_onnx  # noqa: F401  (registers the command)
    from recfx.tools.commands import COMMANDS

    register_calibrator("test_cli_calibrator")(lambda stats, percentile: 1.0)
    try:
        parser = argparse.ArgumentParser()
        COMMANDS.get("export-onnx").add_arguments(parser)
    finally:
        CALIBRATORS.remove("test_cli_calibrator")
    options = {a.dest: a for a in parser._actions}
    assert "test_cli_calibrator" in (options["calibrator"].choices or ())
    assert granularity.name in (options["quant"].help or "")


def test_registered_granularity_exports_to_onnx(granularity: WeightGranularity, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ONNX translation is keyed on the ops and reads the scale's shape: the new granularity exports unchanged
    and ONNX Runtime computes what eager-fp8 computes (float32 division before QuantizeLinear may flip a rare
    rounding tie, hence the tolerance: 2% of max |y| at worst, cosine >= 0.9999)."""
    from recfx.onnx import OnnxExportConfig, export_onnx
    from recfx.onnx.session import OrtRunner

    model, x, _ = _problem()
    blocked = {"activation": "block", "block_size": 64} if granularity.gemm is FP8_LINEAR_BLOCKS else {}
    y, compiled = _compile(model, x, weight=granularity.name, **blocked)
    path = tmp_path / "m.onnx"
    export = export_onnx(compiled, (x,), path, OnnxExportConfig(fp8=True))
    assert export.histogram["DequantizeLinear"] >= 3
    runner = OrtRunner(path, [s.name for s in compiled.input_specs], [s.name for s in compiled.output_specs])
    got = runner(x)
    assert got.shape == y.shape
    assert float((got - y).abs().max()) <= 0.02 * float(y.abs().max()) and cosine(y, got) >= 0.9999


def _per_row(call: Call, x: object, scale: object, block_size: object) -> tuple[object, object]:
    t = call(torch.ops.recfx.quantize_fp8_per_token.default, x)
    return call(operator.getitem, t, 0), call(operator.getitem, t, 1)


def test_registered_activation_mode_compiles_end_to_end() -> None:
    """The activation side registers the same way: a mode written through ``call`` (here per-row scales, the
    built-in per-token recipe under another name) is emitted by fp8_convert, recognised by fp8_lower and computes
    bit for bit what the built-in computes."""
    mode = register_granularity(ActivationMode("dynamic_per_row", "[..., 1]", "row", FP8_LINEAR, _per_row))
    try:
        model, x, _ = _problem()
        y, compiled = _compile(model, x, activation="dynamic_per_row")
        y_builtin, _ = _compile(model, x, activation="dynamic_per_token")
        assert op_histogram(compiled.graph_module).get("recfx.fp8_linear.default") == 3
        assert torch.equal(y, y_builtin)
        assert "channel / row" in compiled.report.sections["fp8"].render()
    finally:
        unregister_granularity(mode)
    assert "dynamic_per_row" not in ACTIVATION_MODES
