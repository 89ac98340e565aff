"""fp8_annotate: the default policy, ordered rules, explicit re-includes, warnings and bad-input errors."""

from __future__ import annotations

import pytest
import torch

from recfx import QuantConfig, QuantRule
from recfx.errors import PassError
from recfx.passes.quant import FP8_PASSES
from recfx.passes.quant.policy import classify
from recfx.passes.quant.state import PLAN


def _planned(gm) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {n.meta[PLAN].name: n.meta[PLAN] for n in gm.graph.nodes if PLAN in n.meta}


def test_classify_kinds(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    gm, _ = fp8.run(*toy, [])
    kinds = {i.module_path: i.kinds for i in classify(gm).values()}
    assert "input_projection" in kinds["inp"] and "head" in kinds["head"] and "router" in kinds["ffn.router"]
    assert "attention" in kinds["attn.q_proj"] and "expert" in kinds["ffn.experts.1"]
    assert not kinds["attn.q_proj"] & {"head", "router", "input_projection"}


def test_default_policy(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    gm, ctx = fp8.run(*toy, ["fp8_annotate"])
    plans = _planned(gm)
    assert sorted(plans) == sorted(fp8.DEFAULT_QUANTIZED)
    assert {p.weight for p in plans.values()} == {"per_channel"}
    assert {p.activation for p in plans.values()} == {"dynamic_per_token"}
    reasons = {d.info.module_path: d.reason for d in ctx.fp8_state.decisions if not d.quantize}
    assert set(reasons) == {"inp", "ffn.router", "head"}
    assert "router" in reasons["ffn.router"] and "head" in reasons["head"]


def test_rules_are_ordered_and_override_granularity(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    quant = QuantConfig(rules=(
        QuantRule("exclude", path="attn"),  # the whole attention module
        QuantRule("include", path="attn.o_proj"),  # later rules win
        QuantRule("include", path="ffn.experts.*", weight="block", activation="block"),
    ))
    plans = _planned(fp8.run(*toy, ["fp8_annotate"], quant=quant)[0])
    assert sorted(plans) == ["attn.o_proj", "ffn.experts.0", "ffn.experts.1"]
    assert plans["ffn.experts.0"].weight == "block" and plans["attn.o_proj"].weight == "per_channel"


def test_default_exclusions_need_an_explicit_include(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    generic = QuantConfig(rules=(QuantRule("include", path="*"), QuantRule("include", module_type="Linear")))
    assert "head" not in _planned(fp8.run(*toy, ["fp8_annotate"], quant=generic)[0])
    explicit = QuantConfig(rules=(QuantRule("include", kind="head"), QuantRule("include", path="ffn.router")))
    plans = _planned(fp8.run(*toy, ["fp8_annotate"], quant=explicit)[0])
    assert {"head", "ffn.router"} <= set(plans) and "inp" not in plans
    everything = QuantConfig(default_exclusions=False)
    assert len(_planned(fp8.run(*toy, ["fp8_annotate"], quant=everything)[0])) == 9


def test_rule_matching_nothing_warns_with_similar_names(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    quant = QuantConfig(rules=(QuantRule("exclude", path="attn.q_prj"),))
    with pytest.warns(UserWarning, match=r"matches no linear layer; similar names: attn\.q_proj"):
        fp8.run(*toy, ["fp8_annotate"], quant=quant)


def test_including_a_non_linear_op_is_an_error(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    quant = QuantConfig(rules=(QuantRule("include", op="aten.matmul"),))
    with pytest.raises(PassError, match="only aten.linear layers"):
        fp8.run(*toy, ["fp8_annotate"], quant=quant)


def test_unsupported_dtype_is_an_error(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    with pytest.raises(PassError, match="float64 is not supported by FP8 quantization.*attn.q_proj|attn.q_proj.*"
                                        "float64"):
        fp8.run(model.double(), (x.double(),), ["fp8_annotate"])


def test_already_quantized_graph_is_an_error(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    gm, ctx = fp8.run(*toy, ["fp8_annotate", "fp8_prepare", "fp8_calibrate", "fp8_convert", "fp8_lower"])
    from recfx.passes import PASSES

    with pytest.raises(ValueError, match="already FP8-quantized"):
        PASSES.get("fp8_annotate").instantiate(ctx)(gm)


def test_nothing_quantized_warns(fp8) -> None:  # type: ignore[no-untyped-def]
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    with pytest.warns(UserWarning, match="quantizes none of the 1 weight GEMMs"):
        fp8.run(model, (torch.randn(2, 8),), ["fp8_annotate"])


def test_no_weight_gemm_warns(fp8) -> None:  # type: ignore[no-untyped-def]
    model = torch.nn.Sequential(torch.nn.ReLU()).eval()
    with pytest.warns(UserWarning, match="found no GEMM with a constant weight"):
        fp8.run(model, (torch.randn(2, 8),), ["fp8_annotate"])


class Recommender(torch.nn.Module):
    """A ranking tower written with addmm / mm / einsum and an attention whose projection is ``output_proj``."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w_in = torch.nn.Parameter(torch.randn(32, 16, generator=g) / 4)  # [K, N]
        self.b_in = torch.nn.Parameter(torch.zeros(16))
        self.w_hidden = torch.nn.Parameter(torch.randn(16, 16, generator=g) / 4)  # [N, K]
        self.output_proj = torch.nn.Linear(16, 16)  # torchtune's name for an attention output projection
        self.w_out = torch.nn.Parameter(torch.randn(16, 1, generator=g) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 32)
        h = torch.relu(torch.addmm(self.b_in, torch.tanh(x), self.w_in))  # (B, 16)
        h = torch.relu(torch.einsum("bk,nk->bn", h, self.w_hidden))
        h = h + self.output_proj(h)
        return torch.sigmoid(torch.mm(h, self.w_out))  # (B, 1): the head


def test_every_weight_gemm_is_a_candidate_and_heads_go_by_position(fp8) -> None:  # type: ignore[no-untyped-def]
    """addmm ([K, N] weight), einsum and a linear named output_proj are quantized; the mm feeding the output is the
    head (by position, not name) and the report counts found / quantized / excluded by rule."""
    gm, ctx = fp8.run(Recommender().eval(), (torch.randn(4, 32),), list(FP8_PASSES))
    report = ctx.report_sections["fp8"]
    assert (report.linears, report.quantized) == (4, 3), report.render()
    assert report.excluded_by == {"default: head kept in high precision": 1}
    assert "3 of 4 weight GEMMs" in report.render() and "excluded: 1 x default: head" in report.render()
    decisions = ctx.fp8_state.decisions
    assert [d.info.node for d in decisions if not d.quantize] == ["linear_2"]  # the head (the mm, now a linear)
    assert "output_proj" in {d.info.module_path for d in decisions if d.quantize}
    assert report.output_cosine > 0.999


def test_attention_and_experts_are_quantized_even_at_the_graph_edges(fp8) -> None:  # type: ignore[no-untyped-def]
    """A block over hidden states: q/k/v read the model input and the experts feed the output directly; the spec
    quantizes attention and expert linears, so only the router stays in high precision."""

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn, self.ffn = fp8.Toy().attn, fp8.Toy().ffn

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            h = h + self.attn(h)
            return h + self.ffn(h)

    gm, ctx = fp8.run(Block().eval(), (torch.randn(2, 8, 64),), ["fp8_annotate"])
    assert sorted(_planned(gm)) == sorted(fp8.DEFAULT_QUANTIZED)
    excluded = {d.info.module_path for d in ctx.fp8_state.decisions if not d.quantize}
    assert excluded == {"ffn.router"}
