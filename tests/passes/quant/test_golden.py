"""Golden counts and model-level accuracy of the FP8 pipeline on the reference models (onerec-tiny, ksa-tiny)."""

from __future__ import annotations

import collections

import pytest
import torch

import recfx
from recfx.models import get_model
from recfx.ops.fp8_terms import fp8_gemm
from recfx.passes.quant.policy import module_stack
from recfx.passes.quant.state import PLAN
from recfx.passes.utils import op_histogram

#: The spec's bar for eager-fp8 against fp32 on the tiny reference models (measured: see docs/fp8.md).
MIN_OUTPUT_COSINE = 0.99


def _expected_onerec(cfg) -> int:  # type: ignore[no-untyped-def]
    """Attention (cross q/o + self q/k/v/o) and FFN / expert linears of every layer, for each of the beam steps."""
    dense, moe = cfg.n_layers - cfg.n_moe_layers, cfg.n_moe_layers
    per_step = cfg.n_layers * 6 + dense * 3 + moe * 3 * (cfg.n_experts + cfg.n_shared_experts)
    return per_step * cfg.levels


def _expected_ksa(cfg) -> int:  # type: ignore[no-untyped-def]
    """q/k/v/o + mlp w1/w2/w3 per layer, plus q/k/v summary projections in the KSA layers."""
    return sum(7 + (3 if cfg.is_ksa_layer(i) else 0) for i in range(cfg.n_layers))


def _compile(name: str) -> tuple[object, torch.nn.Module, recfx.CompiledModule]:
    spec = get_model(name)
    model = spec.build()
    compiled = recfx.compile(model, spec.example_inputs(2), backend="eager-fp8")
    return spec, model, compiled


@pytest.fixture(scope="module")
def onerec() -> tuple[object, torch.nn.Module, recfx.CompiledModule]:
    return _compile("onerec-tiny")


@pytest.fixture(scope="module")
def ksa() -> tuple[object, torch.nn.Module, recfx.CompiledModule]:
    return _compile("ksa-tiny")


def _remaining_linear_paths(gm: torch.fx.GraphModule) -> set[str]:
    return {module_stack(n)[-1][0] for n in gm.graph.nodes if n.target is torch.ops.aten.linear.default}


def _non_linear_ops(hist: dict[str, int]) -> dict[str, int]:
    skip = ("aten.linear", "recfx.fp8_linear", "aten.t.")
    return {k: v for k, v in hist.items() if not k.startswith(skip)}


def test_onerec_golden_counts(onerec) -> None:  # type: ignore[no-untyped-def]
    spec, model, compiled = onerec
    gm = compiled.graph_module
    gemms = [n for n in gm.graph.nodes if fp8_gemm(n.target) is not None]
    assert len(gemms) == _expected_onerec(spec.config) == 252
    kinds = collections.Counter(n.meta[PLAN].kind for n in gemms)
    assert kinds == {"attention": 6 * 4 * 3, "ffn": 3 * 2 * 3, "expert": 27 * 2 * 3}
    left = _remaining_linear_paths(gm)  # everything kept in high precision, by kind
    assert left == {"context.pathways.0", "context.pathways.1", "context.pathways.2", "heads.0", "heads.1",
                    "heads.2", "layers.2.ffn.router", "layers.3.ffn.router"}
    float_gm = recfx.compile(model, spec.example_inputs(2), backend="eager").graph_module
    # embeddings, norms, softmax, attention, top-k and residual adds: the same ops as the float graph
    assert _non_linear_ops(op_histogram(gm)) == _non_linear_ops(op_histogram(float_gm))


def test_ksa_golden_counts(ksa) -> None:  # type: ignore[no-untyped-def]
    spec, _, compiled = ksa
    gm = compiled.graph_module
    assert sum(fp8_gemm(n.target) is not None for n in gm.graph.nodes) == _expected_ksa(spec.config) == 37
    assert _remaining_linear_paths(gm) == {"lm_head"}
    assert op_histogram(gm).get("aten.embedding.default", 0) >= 1


def test_onerec_accuracy_on_fresh_requests(onerec) -> None:  # type: ignore[no-untyped-def]
    spec, model, compiled = onerec
    report = compiled.report.sections["fp8"]
    assert report.output_cosine >= MIN_OUTPUT_COSINE
    fresh = spec.example_inputs(2, seed=7)
    with torch.inference_mode():
        items_ref, scores_ref = model(*fresh)
        items, scores = compiled(*fresh)
    from recfx.analysis.numerics import cosine, topk_overlap

    cos, overlap = cosine(scores_ref, scores), topk_overlap(items_ref, items)
    print(f"onerec-tiny eager-fp8 vs fp32 on fresh requests: score cosine {cos:.6f}, top-16 overlap {overlap:.3f}")
    assert cos >= MIN_OUTPUT_COSINE
    assert overlap >= 0.5  # random-init weights give flat score distributions: near-ties swap beams
    assert "top-16 item overlap" in str(compiled.report)


def test_ksa_accuracy_on_fresh_tokens(ksa) -> None:  # type: ignore[no-untyped-def]
    spec, model, compiled = ksa
    fresh = spec.example_inputs(3, seed=7)
    with torch.inference_mode():
        ref, got = model(*fresh), compiled(*fresh)
    from recfx.analysis.numerics import cosine

    cos = cosine(ref, got)
    print(f"ksa-tiny eager-fp8 vs fp32 on fresh tokens: logits cosine {cos:.6f}")
    assert cos >= MIN_OUTPUT_COSINE


def test_ksa_auto_exclude_reaches_a_tighter_target(ksa) -> None:  # type: ignore[no-untyped-def]
    spec, model, compiled = ksa
    plain = compiled.report.sections["fp8"].output_cosine
    target = 1 - (1 - plain) / 3
    tight = recfx.compile(model, spec.example_inputs(2), backend="eager-fp8",
                          quant=recfx.QuantConfig(auto_exclude=target))
    report = tight.report.sections["fp8"]
    print(f"ksa-tiny auto_exclude: plain cosine {plain:.6f}, target {target:.6f}, reached "
          f"{report.output_cosine:.6f} keeping {len(report.auto_excluded)} of 37 modules in high precision")
    assert 0 < len(report.auto_excluded) < 37
    assert report.output_cosine >= target and report.quantized == 37 - len(report.auto_excluded)
    most_sensitive = {m for m, _ in report.sensitivity[: len(report.auto_excluded)]}
    assert set(report.auto_excluded) == most_sensitive


def _lowered(compiled: recfx.CompiledModule, options: dict | None = None):  # type: ignore[no-untyped-def, type-arg]
    """The eager-fp8 graph through ``fp8_lower_scaled_mm`` (what ``cuda-fp8`` hands to Inductor), and its summary."""
    import copy

    from recfx.passes import PASSES, PassContext

    gm = copy.deepcopy(compiled.graph_module)
    ctx = PassContext(backend_options=options or {"exact_quant": True})  # default: bit-equal quantization
    PASSES.get("fp8_lower_scaled_mm").instantiate(ctx)(gm)
    return gm, ctx.report_sections["fp8_gemm"]


def test_onerec_scaled_mm_golden_counts(onerec) -> None:  # type: ignore[no-untyped-def]
    spec, _, compiled = onerec
    cfg = spec.config
    gm, summary = _lowered(compiled)
    hist = op_histogram(gm)
    assert hist.get("aten._scaled_mm.default") == summary.lowered == 252 and not summary.kept
    # one quantization per tensor: cross q, cross o, self q/k/v, self o; SwiGLU gate/up, down; in MoE layers the
    # gate/up of every expert share one, each expert's down has its own
    dense, moe = cfg.n_layers - cfg.n_moe_layers, cfg.n_moe_layers
    per_step = cfg.n_layers * 4 + dense * 2 + moe * (1 + cfg.n_experts + cfg.n_shared_experts)
    assert summary.quantizations == hist.get("aten.amax.default") == per_step * cfg.levels == 120
    assert "recfx.fp8_linear.default" not in hist
    fresh = spec.example_inputs(2, seed=3)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    for a, b in zip(want, got):  # float32: the lowered graph computes the very same numbers
        assert torch.equal(a, b)


def test_swiglu_products_golden_counts(onerec, ksa) -> None:  # type: ignore[no-untyped-def]
    """``silu_quant_kernel`` (a ``cuda-fp8`` default) takes every SwiGLU down projection's input: onerec-tiny's dense
    layers and each routed and shared expert of its MoE layers, per decoding level; ksa-tiny's w2 inputs."""
    spec, _, compiled = onerec
    cfg = spec.config
    gm, summary = _lowered(compiled, {"silu_quant_kernel": True})
    dense, moe = cfg.n_layers - cfg.n_moe_layers, cfg.n_moe_layers
    assert summary.silu_kernels == op_histogram(gm).get("recfx.silu_mul_fp8.default") == (
        dense + moe * (cfg.n_experts + cfg.n_shared_experts)) * cfg.levels
    spec, _, compiled = ksa
    gm, summary = _lowered(compiled, {"silu_quant_kernel": True})
    assert summary.silu_kernels == op_histogram(gm).get("recfx.silu_mul_fp8.default") == spec.config.n_layers
    fresh = spec.example_inputs(3, seed=5)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    assert torch.nn.functional.cosine_similarity(want.flatten(), got.flatten(), dim=0) > 0.9999


def test_ksa_scaled_mm_golden_counts(ksa) -> None:  # type: ignore[no-untyped-def]
    spec, _, compiled = ksa
    gm, summary = _lowered(compiled)
    assert summary.lowered == op_histogram(gm).get("aten._scaled_mm.default") == 37 and not summary.kept
    # per layer: q/k/v (the KSA layers' summary q/k/v projections read the same normed input), o, w1/w3, w2
    assert summary.quantizations == 4 * spec.config.n_layers
    assert op_histogram(gm).get("recfx.ksa_attention.default", 0) == op_histogram(compiled.graph_module).get(
        "recfx.ksa_attention.default", 0)
    fresh = spec.example_inputs(3, seed=5)
    with torch.inference_mode():
        assert torch.equal(compiled(*fresh), gm(*fresh))


def test_onerec_gqa_fold_golden_counts(onerec) -> None:  # type: ignore[no-untyped-def]
    """Every cross-attention (non-causal, K/V repeated over the query heads) folds; the causal self-attention stays."""
    import copy

    from recfx.passes.fold_gqa import fold_gqa_attention

    spec, _, compiled = onerec
    cfg = spec.config
    gm = copy.deepcopy(compiled.graph_module)
    sdpa = "aten.scaled_dot_product_attention.default"
    before = op_histogram(gm)
    assert fold_gqa_attention(gm).changed_nodes == cfg.n_layers * cfg.levels == 12
    after = op_histogram(gm)
    assert after.get(sdpa) == before.get(sdpa) == 2 * cfg.n_layers * cfg.levels
    assert after["aten.expand.default"] < before["aten.expand.default"]  # the K/V repeats are gone
    kv_heads = sorted(n.args[1].meta["val"].shape[1] for n in gm.graph.nodes if
                      n.target is torch.ops.aten.scaled_dot_product_attention.default)
    assert kv_heads == [cfg.kv_groups] * 12 + [cfg.n_heads] * 12
    fresh = spec.example_inputs(3, seed=4)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    assert torch.equal(want[0], got[0])  # the same beams
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)  # float32 scores; the kernel's row blocks differ


def test_ksa_gqa_fold_leaves_causal_attention(ksa) -> None:  # type: ignore[no-untyped-def]
    import copy

    from recfx.passes.fold_gqa import fold_gqa_attention

    _, _, compiled = ksa
    assert not fold_gqa_attention(copy.deepcopy(compiled.graph_module)).modified
