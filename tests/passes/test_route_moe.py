"""route_moe_experts: the dense all-experts MoE sum becomes routed grouped GEMMs computing the same function."""

import dataclasses

import pytest
import torch
from torch import nn

from recfx.models import get_model
from recfx.models.onerec import MoE
from recfx.passes.route_moe import _RouteMoe, route_moe_experts

GROUPED = "aten._grouped_mm.default"


def _cfg(**kw):
    return dataclasses.replace(get_model("onerec-tiny").config, d_model=32, d_expert=48, n_experts=5, top_k=2, **kw)


def _moe(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return MoE(_cfg(**kw)).to(dtype).eval()


def _rel_err(got, want):
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("shared", [0, 1])
def test_routes_bf16_as_accurately_as_the_dense_sum(graph_of, count, shared):
    moe = _moe(torch.bfloat16, n_shared_experts=shared)
    gm = graph_of(moe, torch.randn(2, 7, 32, dtype=torch.bfloat16))
    x = torch.randn(3, 7, 32, dtype=torch.bfloat16)  # another batch: the batch stays dynamic
    dense = gm(x)
    res = route_moe_experts(gm)
    assert res.changed_nodes == 1
    assert count(gm, GROUPED) == 3  # w1, w3, w2 of all experts: one launch each
    assert count(gm, "aten.linear.default") == 1 + 3 * shared  # the router and the shared experts stay
    assert not any("experts_" in name for name, _ in gm.named_parameters())  # the per-expert copies are gone
    routed = gm(x)
    with torch.no_grad():  # float64 reference of the same weights; the routing decisions are the bf16 model's
        exact = _moe(torch.float64, n_shared_experts=shared)(x.double())
    assert _rel_err(routed, exact) <= 1.5 * _rel_err(dense, exact) + 1e-3
    cos = torch.nn.functional.cosine_similarity(routed.double().flatten(), dense.double().flatten(), dim=0)
    assert cos > 0.9999


def test_leaves_float32_alone(graph_of):
    gm = graph_of(_moe(torch.float32), torch.randn(2, 7, 32))
    assert not route_moe_experts(gm).modified  # torch's grouped GEMM is bf16 only


class Biased(nn.Module):
    """Experts with a bias and a routing matrix also returned: not the form the pass proves."""

    def __init__(self, returned: bool, bias: bool):
        super().__init__()
        self.moe = _moe(torch.bfloat16)
        self.returned = returned
        if bias:
            self.moe.experts[0].w2.bias = nn.Parameter(torch.zeros(32, dtype=torch.bfloat16))

    def forward(self, x):
        out = self.moe(x)
        return (out, self.moe.router(x)) if self.returned else out


@pytest.mark.parametrize("bias", [True, False])
def test_leaves_alone_unproven_forms(graph_of, bias):
    gm = graph_of(Biased(returned=False, bias=bias), torch.randn(2, 7, 32, dtype=torch.bfloat16))
    assert route_moe_experts(gm).modified is (not bias)


class Partial(nn.Module):
    """Only some experts summed: the pass would drop the others' (zero) terms, but it must see every expert."""

    def __init__(self):
        super().__init__()
        self.moe = _moe(torch.bfloat16)

    def forward(self, x):
        m = self.moe
        probs = torch.softmax(m.router(x), dim=-1)
        top_w, top_i = probs.topk(2, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_w)
        out = torch.zeros_like(x)
        for i in range(4):  # expert 4 left out
            out = out + weights[..., i : i + 1] * m.experts[i](x)
        return out


def test_leaves_alone_a_sum_over_some_experts(graph_of):
    gm = graph_of(Partial(), torch.randn(2, 7, 32, dtype=torch.bfloat16))
    assert not route_moe_experts(gm).modified


def test_onerec_tiny_golden_count():
    import copy

    import recfx

    spec = get_model("onerec-tiny")
    model = spec.build().to(torch.bfloat16)
    compiled = recfx.compile(model, spec.example_inputs(2, dtype=torch.bfloat16), backend="eager",
                             config=recfx.CompileConfig(check_numerics=False))
    gm = copy.deepcopy(compiled.graph_module)
    cfg = spec.config
    assert route_moe_experts(gm).changed_nodes == cfg.n_moe_layers * cfg.levels == 6
    fresh = spec.example_inputs(3, seed=2, dtype=torch.bfloat16)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    # bf16 beams of a random model are near ties (which beams survive differs with any rounding); their scores agree
    torch.testing.assert_close(got[1].float(), want[1].float(), rtol=0.02, atol=0.05)


def _emulated_scaled_grouped_mm(a, b, scale_a, scale_b, offs=None, bias=None, scale_result=None, out_dtype=None,
                                use_fast_accum=False):
    """CPU stand-in for CUDA's row-wise FP8 grouped GEMM (tests only): dequantize, grouped GEMM in float32."""
    deq_a = a.float() * scale_a.reshape(-1, 1)
    deq_b = b.float() * scale_b[:, None, :]  # (E, K, N) * (E, 1, N)
    return torch._grouped_mm(deq_a, deq_b, offs=offs).to(out_dtype)


@pytest.fixture
def cpu_scaled_grouped_mm():
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("_scaled_grouped_mm", _emulated_scaled_grouped_mm, "CPU")
    yield
    lib._destroy()


def test_fp8_experts_route_with_the_same_quantization(cpu_scaled_grouped_mm):
    """eager-fp8's MoE (per-channel FP8 experts) routed: each token quantized once, as the dense form does."""
    import copy

    import recfx

    model = nn.Sequential(_moe(torch.bfloat16)).eval()
    x = torch.randn(2, 7, 32, dtype=torch.bfloat16)
    compiled = recfx.compile(model, (x,), backend="eager-fp8",
                             config=recfx.CompileConfig(check_numerics=False))
    gm = copy.deepcopy(compiled.graph_module)
    res = _RouteMoe(fp8=True, cuda_only=False)(gm)
    assert res.changed_nodes == 1
    targets = [n.target for n in gm.graph.nodes]
    assert targets.count(torch.ops.aten._scaled_grouped_mm.default) == 3
    assert targets.count(torch.ops.recfx.fp8_linear.default) == 3  # the shared expert's w1, w3, w2
    xs = torch.randn(3, 7, 32, dtype=torch.bfloat16)
    with torch.inference_mode():
        want, got = compiled(xs).float(), gm(xs).float()
    cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
    assert cos > 0.999, cos


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_block_scaled_experts_route_on_the_grouped_block_kernel(dtype):
    """The OneRec-V2 MoE recipe (1 x B activation groups, B x B weight blocks) routed: the experts' three projections
    on three grouped ``recfx::fp8_block_mm`` launches, each token quantized once; the same terms in the same order
    as the dense sum."""
    import copy

    import recfx
    from recfx.passes.quant import QuantConfig

    torch.manual_seed(0)
    model = nn.Sequential(MoE(dataclasses.replace(_cfg(), d_expert=64))).to(dtype).eval()  # hidden 64 = 2 blocks
    x = torch.randn(2, 7, 32, dtype=dtype)
    compiled = recfx.compile(model, (x,), backend="eager-fp8", quant=QuantConfig(weight="block", activation="block",
                                                                                block_size=32),
                             config=recfx.CompileConfig(check_numerics=False))
    gm = copy.deepcopy(compiled.graph_module)
    assert _RouteMoe(fp8=True, cuda_only=True)(copy.deepcopy(gm)).changed_nodes == 0  # the kernel is CUDA's
    res = _RouteMoe(fp8=True, cuda_only=False, exact_quant=True, fast_accum=False)(gm)  # the reference's roundings
    assert res.changed_nodes == 1
    targets = [n.target for n in gm.graph.nodes]
    grouped = [n for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_block_mm.default]
    assert len(grouped) == 3 and all(n.args[-1] is False for n in grouped)  # fast_accum reaches the kernel
    assert targets.count(torch.ops.recfx.fp8_linear_blocks.default) == 3  # the shared expert's w1, w3, w2
    xs = torch.randn(3, 7, 32, dtype=dtype)
    with torch.inference_mode():
        want, got = compiled(xs).float(), gm(xs).float()
    assert torch.equal(got, want)


def test_block_experts_with_another_block_size_each_stay(graph_of):
    """Experts quantized with different block sizes do not stack into one grouped launch, nor experts whose sizes
    are not multiples of the block."""
    from recfx.passes.route_moe import _Expert, _Moe, _supported

    torch.manual_seed(0)
    model = nn.Sequential(MoE(dataclasses.replace(_cfg(), d_expert=64))).to(torch.bfloat16)
    gm = graph_of(model, torch.randn(2, 7, 32, dtype=torch.bfloat16))
    attr = {str(n.target): n for n in gm.graph.nodes if n.op == "get_attr"}
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    index = next(n for n in gm.graph.nodes if n.args[:1] and getattr(n.args[0], "target", None)
                 is torch.ops.aten.topk.default and n.args[1] == 1)

    def expert(i, block):
        return _Expert(*(next(v for k, v in attr.items() if f"experts.{i}.{w}" in k) for w in ("w1", "w3", "w2")),
                       None, block)

    def supported(*blocks):
        experts = [expert(i, b) for i, b in enumerate(blocks)]
        return _supported(gm, _Moe(x, index, index, experts, list(range(len(blocks))), x, x, True), cuda_only=False)

    assert supported(32, 32) and not supported(32, 64)  # hidden 64, model 32
    assert not supported(64, 64) and not supported(16, 16)  # 32 is no multiple of 64; 16 is no kernel block size


class Written(nn.Module):
    """MoE variants the review found: sum order, pooled routing, written zeros, two stacked layers."""

    def __init__(self, variant):
        super().__init__()
        self.a, self.b = _moe(torch.bfloat16), _moe(torch.bfloat16)
        self.variant = variant

    def layer(self, m, x):
        routed = x.mean(0, keepdim=True) if self.variant == "pooled" else x
        probs = torch.softmax(m.router(routed), dim=-1)
        top_w, top_i = probs.topk(2, dim=-1)
        zeros = torch.zeros_like(probs)
        if self.variant == "written_zeros":
            zeros[..., 0] = 0.25
        weights = zeros.scatter(-1, top_i, top_w)
        out = torch.zeros_like(x)
        order = [3, 1, 4, 0, 2] if self.variant == "order" else range(5)
        for i in order:
            out = out + weights[..., i : i + 1] * m.experts[i](x)
        return out

    def forward(self, x):
        y = self.layer(self.a, x)
        return self.layer(self.b, y) if self.variant == "stacked" else y


@pytest.mark.parametrize("variant,routed", [("order", 1), ("pooled", 0), ("written_zeros", 0), ("stacked", 2)])
def test_review_cases(graph_of, count, variant, routed):
    x = torch.randn(6, 32, dtype=torch.bfloat16)
    gm = graph_of(Written(variant), x)
    want = gm(x)
    assert route_moe_experts(gm).changed_nodes == routed
    if variant == "stacked":
        assert count(gm, "aten.linear.default") == 2  # only the routers: no dense layer stays alive
    got = gm(x)
    cos = torch.nn.functional.cosine_similarity(got.double().flatten(), want.double().flatten(), dim=0)
    assert cos > 0.9999 and _rel_err(got, want.double()) < 2e-2


@pytest.mark.parametrize("out_dtype", [None, torch.float32])
def test_fp8_experts_with_another_out_dtype_stay(cpu_scaled_grouped_mm, out_dtype):
    from recfx.ops.fp8 import quantize_weight

    class Fp8Out(nn.Module):
        def __init__(self):
            super().__init__()
            self.out_dtype = out_dtype
            moe = _moe(torch.bfloat16)
            self.router = moe.router
            for i, e in enumerate(moe.experts):
                for name in ("w1", "w3", "w2"):
                    q, s = quantize_weight(getattr(e, name).weight.float())
                    self.register_buffer(f"q{i}{name}", q)
                    self.register_buffer(f"s{i}{name}", s)

        def lin(self, x, i, name):
            w, s = getattr(self, f"q{i}{name}"), getattr(self, f"s{i}{name}")
            return torch.ops.recfx.fp8_linear(x, w, s, None, None, self.out_dtype)

        def forward(self, x):
            probs = torch.softmax(self.router(x), dim=-1)
            top_w, top_i = probs.topk(2, dim=-1)
            weights = torch.zeros_like(probs).scatter(-1, top_i, top_w)
            out = torch.zeros_like(x)
            for i in range(5):
                h = torch.nn.functional.silu(self.lin(x, i, "w1")) * self.lin(x, i, "w3")
                out = out + weights[..., i : i + 1] * self.lin(h, i, "w2")
            return out

    from recfx.frontend import capture

    gm = capture(Fp8Out().eval(), (torch.randn(2, 7, 32, dtype=torch.bfloat16),), dynamic_batch=True).graph_module
    x = torch.randn(3, 7, 32, dtype=torch.bfloat16)
    want = gm(x)
    assert _RouteMoe(fp8=True, cuda_only=False)(gm).changed_nodes == (1 if out_dtype is None else 0)
    got = gm(x)
    assert got.dtype == want.dtype
    cos = torch.nn.functional.cosine_similarity(got.double().flatten(), want.double().flatten(), dim=0)
    assert cos > 0.999
