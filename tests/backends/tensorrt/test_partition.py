"""recfx/backends/tensorrt/partition.py: which nodes TensorRT takes and why the rest fall back (no TensorRT needed;
the converter registry is the ``has_converter`` argument, as Torch-TensorRT's ``node in DYNAMO_CONVERTERS``)."""

from __future__ import annotations

import pytest
import torch

import recfx
from recfx.backends.tensorrt.partition import TensorRTFallbackError, plan_partition, scale_axis
from recfx.frontend.capture import capture
from recfx.ops.fp8 import quantize_weight
from recfx.ops.fp8_terms import FP8_LINEAR_BLOCKS

aten = torch.ops.aten


class QdqModel(torch.nn.Module):
    """Q/DQ with a constant per-tensor scale (TensorRT), a run-time scale and a 2-D blocked scale (both fall back)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("s", torch.tensor(0.05))
        self.register_buffer("blocks", torch.full((4, 4), 0.05))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.recfx.dequantize_fp8(torch.ops.recfx.quantize_fp8(x, self.s), self.s, torch.float32)
        runtime = torch.ops.recfx.quantize_fp8(x, x.abs().amax() / 448)
        blocked = torch.ops.recfx.quantize_fp8(x, self.blocks)
        return y + runtime.float() + blocked.float()


def _by_target(plan, op):  # type: ignore[no-untyped-def]
    return [d for d in plan.decisions if d.target == str(op)]


def test_qdp_rules_pick_constant_scales_only() -> None:
    gm = capture(QdqModel().eval(), (torch.randn(4, 4),), dynamic_batch=False).graph_module
    plan = plan_partition(gm, lambda node: True)
    quant = _by_target(plan, torch.ops.recfx.quantize_fp8.default)
    assert [d.to_trt for d in quant] == [True, False, False]
    assert "computed at run time" in quant[1].reason
    assert "neither per-tensor nor per-channel" in quant[2].reason
    assert [d.to_trt for d in _by_target(plan, torch.ops.recfx.dequantize_fp8.default)] == [True]


def test_registry_decides_for_aten_ops_and_float64_falls_back() -> None:
    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x).double().sin()

    gm = capture(M().eval(), (torch.randn(3, 5),), dynamic_batch=False).graph_module
    plan = plan_partition(gm, lambda node: node.target is not aten.relu.default)
    reasons = {d.target: d.reason for d in plan.fallback}
    assert reasons[str(aten.relu.default)] == "no TensorRT converter for this op"
    assert reasons[str(aten.sin.default)].startswith("float64")
    assert len(plan.fallback) == 3  # relu, the cast to float64, sin
    with pytest.raises(TensorRTFallbackError, match=r"3 node\(s\) would run in PyTorch, not TensorRT: relu"):
        plan.check_full_graph()


def test_fp8_linear_from_the_fp8_passes_goes_to_tensorrt() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()
    rules = (recfx.QuantRule("include", kind="head"), recfx.QuantRule("include", kind="input_projection"))
    quant = recfx.QuantConfig(progress=False, eval_batches=1, rules=rules)
    compiled = recfx.compile(model, (torch.randn(4, 32),), backend="eager-fp8", quant=quant)
    plan = plan_partition(compiled.graph_module, lambda node: True)
    linears = _by_target(plan, torch.ops.recfx.fp8_linear.default)
    assert len(linears) == 2 and all(d.to_trt for d in linears)
    plan.check_full_graph()  # nothing falls back


def test_fp8_linear_with_a_blocked_weight_scale_and_other_recfx_ops_fall_back() -> None:
    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w_q, _ = quantize_weight(torch.randn(16, 32))
            self.register_buffer("w_q", w_q)
            self.register_buffer("w_s", torch.full((4, 8), 0.01))  # neither [] nor [N, 1]

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            q, s = torch.ops.recfx.quantize_fp8_per_token(x)
            return torch.ops.recfx.fp8_linear_blocks(x, self.w_q, self.w_s, None, 4), q.float() * s

    gm = capture(M().eval(), (torch.randn(2, 32),), dynamic_batch=False).graph_module
    plan = plan_partition(gm, lambda node: True)
    reasons = {d.target: d.reason for d in plan.fallback}
    assert reasons["recfx.quantize_fp8_per_token.default"] == "recfx op without a TensorRT converter"
    assert reasons["recfx.fp8_linear_blocks.default"] == FP8_LINEAR_BLOCKS.tensorrt  # the GEMM descriptor says why


def test_ksa_rule_takes_rank4_float_q() -> None:
    class M(torch.nn.Module):
        def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            out, _ = torch.ops.recfx.ksa_attention(q, kv, kv, 4, 1, 1, 0.35)
            return out

    q, kv = torch.randn(1, 10, 2, 8), torch.randn(1, 10, 1, 8)
    plan = plan_partition(capture(M().eval(), (q, kv), dynamic_batch=False).graph_module, lambda node: True)
    assert [d.to_trt for d in _by_target(plan, torch.ops.recfx.ksa_attention.default)] == [True]
    plan64 = plan_partition(capture(M().eval(), (q.double(), kv.double()), dynamic_batch=False).graph_module,
                            lambda node: True)
    (ksa,) = _by_target(plan64, torch.ops.recfx.ksa_attention.default)
    assert not ksa.to_trt and "float64" in ksa.reason


@pytest.mark.parametrize(("shape", "rank", "axis"), [((), 2, -1), ((1, 1), 2, -1), ((16, 1), 2, 0), ((1, 8), 2, 1),
                                                      ((8,), 3, 2), ((4, 4), 2, None), ((1, 1, 1, 2), 2, None)])
def test_scale_axis(shape: tuple[int, ...], rank: int, axis: int | None) -> None:
    assert scale_axis(shape, rank) == axis


def test_the_report_section_lists_fallbacks_and_the_profile() -> None:
    from recfx.backends.tensorrt.dynamo import TensorRTReport
    from recfx.backends.tensorrt.profiles import derive_profiles

    gm = capture(QdqModel().eval(), (torch.randn(4, 4),), dynamic_batch=False).graph_module
    (profile,) = derive_profiles([("x", ("batch", 4))], [{"batch": (1, 4, 16)}])
    report = TensorRTReport(plan_partition(gm, lambda node: True), profile)
    text = report.render()
    assert "falls back: quantize_fp8_1" in text and "computed at run time" in text
    assert "profile p0: x min (1, 4) opt (4, 4) max (16, 4)" in text
    assert len(report.to_dict()["fallback"]) == 2  # type: ignore[arg-type]
