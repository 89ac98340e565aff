"""``fp8_lower_scaled_mm``: FP8 GEMM ops -> aten quantization + torch._scaled_mm (the ``cuda-fp8`` lowering)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recfx.passes import PASSES, PassContext
from recfx.passes.quant import QuantConfig, QuantRule
from recfx.passes.quant.lower_scaled_mm import ScaledMmLowering, _still_reference

ops = torch.ops.recfx
aten = torch.ops.aten


EXACT = PassContext(backend_options={"exact_quant": True})


def _lower(gm, ctx: PassContext | None = None):  # type: ignore[no-untyped-def]
    ctx = ctx or PassContext(backend_options=EXACT.backend_options)
    result = PASSES.get("fp8_lower_scaled_mm").instantiate(ctx)(gm)
    return result, ctx.report_sections["fp8_gemm"]


def test_toy_lowering_shares_quantizations_and_keeps_the_numbers(fp8, toy) -> None:
    model, inputs = toy
    gm, _ = fp8.run(model, inputs, list(fp8_passes()))
    x = torch.randn(3, 8, 16)
    with torch.inference_mode():
        want = gm(x)
    before = fp8.count(gm, ops.fp8_linear.default)
    result, summary = _lower(gm)
    assert result.modified and before == 6
    assert fp8.count(gm, ops.fp8_linear.default) == 0
    assert fp8.count(gm, aten._scaled_mm.default) == 6
    # q/k/v read one tensor, both experts another, o_proj a third: three quantizations for six GEMMs
    assert summary.lowered == 6 and summary.quantizations == 3 and summary.kept == []
    assert fp8.count(gm, aten.amax.default) == 3
    assert "6 (unit scales, float32 epilogue)" in summary.render()
    with torch.inference_mode():
        got = gm(x)
    assert torch.equal(got, want)  # float32 model: same quantization, same GEMM, same epilogue order


def fp8_passes() -> tuple[str, ...]:
    from recfx.passes.quant import FP8_PASSES

    return FP8_PASSES


def test_bf16_uses_row_wise_epilogue(fp8, toy) -> None:
    model, inputs = toy
    model = model.to(torch.bfloat16)
    gm, _ = fp8.run(model, (inputs[0].to(torch.bfloat16),), list(fp8_passes()))
    x = torch.randn(4, 8, 16).to(torch.bfloat16)
    with torch.inference_mode():
        want = gm(x).float()
    _, summary = _lower(gm)
    assert "row-wise scales, bf16 out" in summary.epilogue
    mm = fp8.nodes(gm, aten._scaled_mm.default)
    assert all(n.args[6] == torch.bfloat16 and n.args[7] is True for n in mm)  # out dtype, fast accumulation
    w_t = mm[0].args[1]
    assert w_t.target is aten.t.default and w_t.args[0].op == "get_attr"  # the FP8 weight as a view, no copy
    with torch.inference_mode():
        got = gm(x).float()
    # bf16 output rounding in a different place (scales applied inside the GEMM): within a few bf16 steps
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9999


def test_fast_accum_option(fp8, toy) -> None:
    model, inputs = toy
    gm, _ = fp8.run(model, inputs, list(fp8_passes()))
    ctx = PassContext(backend_options={"fast_accum": False})
    _, summary = _lower(gm, ctx)
    assert not summary.fast_accum
    assert all(n.args[7] is False for n in fp8.nodes(gm, aten._scaled_mm.default))


def test_static_activation_scales(fp8, toy) -> None:
    model, inputs = toy
    calibration = [(torch.randn(2, 8, 16),) for _ in range(2)]
    gm, _ = fp8.run(model, inputs, list(fp8_passes()), quant=QuantConfig(activation="static_per_tensor"),
                    calibration=calibration)
    x = torch.randn(5, 8, 16)
    with torch.inference_mode():
        want = gm(x)
    _, summary = _lower(gm)
    assert summary.lowered == 6 and fp8.count(gm, aten.amax.default) == 0
    with torch.inference_mode():
        assert torch.equal(gm(x), want)


class _Odd(nn.Module):
    """One GEMM cuBLASLt can take (K = N = 32) and one it cannot (N = 10, K = 24)."""

    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(32, 24)
        self.down_proj = nn.Linear(24, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.relu(self.up_proj(x)))


def test_unaligned_shapes_and_blocks_stay_reference_ops(fp8) -> None:
    torch.manual_seed(0)
    gm, _ = fp8.run(_Odd().eval(), (torch.randn(2, 32),), list(fp8_passes()),
                    quant=QuantConfig(rules=(QuantRule("include", path="up_proj"),
                                             QuantRule("include", path="down_proj"))))
    _, summary = _lower(gm)
    assert summary.lowered == 0 and len(summary.kept) == 2
    assert all("multiple of 16" in why for _, why in summary.kept)
    assert "left as reference ops" in summary.render()


def test_block_sizes_the_kernel_does_not_take_stay_reference_ops(fp8, toy) -> None:
    model, inputs = toy
    gm, _ = fp8.run(model, inputs, list(fp8_passes()), quant=QuantConfig(weight="block", activation="block",
                                                                          block_size=16))
    _, summary = _lower(gm)
    assert summary.lowered == 0 and summary.kept and all("block size 16" in why for _, why in summary.kept)
    assert isinstance(summary, ScaledMmLowering) and summary.to_dict()["kept"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_scaled_gemms_become_group_quantization_and_fp8_block_mm(fp8, toy, dtype: torch.dtype) -> None:
    """Block-scaled linears (with biases: the toy's experts) lowered: one group quantization per input, the same
    numbers as the reference op (exact quantization: the same roundings, the same per-block sums)."""
    model, inputs = toy
    model = model.to(dtype)
    gm, _ = fp8.run(model, (inputs[0].to(dtype),), list(fp8_passes()),
                    quant=QuantConfig(weight="block", activation="block", block_size=32))
    x = torch.randn(3, 8, 16).to(dtype)
    with torch.inference_mode():
        want = gm(x)
    assert fp8.count(gm, ops.fp8_linear_blocks.default) == 6
    _, summary = _lower(gm)
    assert summary.lowered == 6 and summary.quantizations == 3 and summary.kept == []
    assert fp8.count(gm, ops.fp8_block_mm.default) == 6 and fp8.count(gm, ops.fp8_linear_blocks.default) == 0
    assert all(n.args[-1] is True for n in gm.graph.nodes if n.target is ops.fp8_block_mm.default)  # fast_accum
    assert "block scales, recfx::fp8_block_mm" in summary.render()
    with torch.inference_mode():
        got = gm(x)
    assert torch.equal(got, want)


def test_block_scaled_gemm_with_k_off_the_blocks_stays(fp8) -> None:
    torch.manual_seed(0)
    gm, _ = fp8.run(_Odd().eval(), (torch.randn(2, 32),), list(fp8_passes()),
                    quant=QuantConfig(weight="block", activation="block", block_size=32,
                                      rules=(QuantRule("include", path="up_proj"),
                                             QuantRule("include", path="down_proj"))))
    _, summary = _lower(gm)
    assert summary.lowered == 1 and summary.kept == [("down_proj", "K=24 is not a multiple of the block size 32")]


@pytest.mark.parametrize("dtype", [torch.float16])
def test_fp16_epilogue(fp8, toy, dtype: torch.dtype) -> None:
    model, inputs = toy
    model = model.to(dtype)
    gm, _ = fp8.run(model, (inputs[0].to(dtype),), list(fp8_passes()))
    x = torch.randn(2, 8, 16).to(dtype)
    with torch.inference_mode():
        want = gm(x)
    _lower(gm)
    with torch.inference_mode():
        got = gm(x)
    assert got.dtype == dtype and torch.equal(got, want)


def test_default_float32_quantization_is_within_one_step(fp8, toy) -> None:
    """Without exact_quant the values come from a float32 division: rare ties round one E4M3 step away."""
    model, inputs = toy
    gm, _ = fp8.run(model, inputs, list(fp8_passes()))
    x = torch.randn(64, 8, 16)
    with torch.inference_mode():
        want = gm(x)
    _, summary = _lower(gm, PassContext())
    assert not summary.exact_quant and "float32 quantization" in summary.render()
    assert fp8.count(gm, aten.bitwise_and.Scalar) == 0  # no round-to-odd ops
    with torch.inference_mode():
        got = gm(x)
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99999


class _WrittenBetween(nn.Module):
    """Review find: the tensor two GEMMs read is written in place (through a view) between them."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.a, self.b = (nn.Linear(32, 32, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.p(x) * 2
        y1 = self.a(h)
        h[:, :16].add_(3.0)
        return y1 + self.b(h)


def test_a_tensor_written_between_two_gemms_is_quantized_for_each(fp8) -> None:
    torch.manual_seed(0)
    quant = QuantConfig(rules=(QuantRule("include", path="a"), QuantRule("include", path="b")))
    gm, _ = fp8.run(_WrittenBetween().eval(), (torch.randn(4, 32),), list(fp8_passes()), quant=quant)
    x = torch.randn(4, 32)
    with torch.inference_mode():
        want = gm(x)
    _, summary = _lower(gm)
    assert summary.lowered == 2 and summary.quantizations == 2  # not shared: the second sees the written values
    with torch.inference_mode():
        assert torch.equal(gm(x), want)


class _GemmOutputWrittenBetween(nn.Module):
    """Review find: a GEMM's own output, read by two GEMMs, is written in place (through a view) between them."""

    def __init__(self) -> None:
        super().__init__()
        self.p, self.a, self.b = (nn.Linear(32, 32, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.p(torch.tanh(x))
        y1 = self.a(h)
        h[:, :16].add_(3.0)
        return y1 + self.b(h)


def test_a_lowered_gemm_output_written_between_two_gemms_is_quantized_for_each(fp8) -> None:
    torch.manual_seed(0)
    quant = QuantConfig(default_exclusions=False)
    gm, _ = fp8.run(_GemmOutputWrittenBetween().eval(), (torch.randn(4, 32),), list(fp8_passes()), quant=quant)
    x = torch.randn(4, 32)
    with torch.inference_mode():
        want = gm(x)
    _, summary = _lower(gm)
    assert summary.lowered == 3 and summary.quantizations == 3  # p's input, then h once for a and once for b
    with torch.inference_mode():
        assert torch.equal(gm(x), want)


def test_quantized_operand_is_row_major_and_unit_scale_follows_the_weights(fp8, toy) -> None:
    model, inputs = toy
    gm, _ = fp8.run(model, inputs, list(fp8_passes()))
    _lower(gm)
    for mm in fp8.nodes(gm, aten._scaled_mm.default):
        q = mm.args[0]
        assert q.target is aten.clone.default and q.kwargs["memory_format"] == torch.contiguous_format
    unit = [n for n in gm.graph.nodes if n.op == "get_attr" and "unit_scale" in str(n.target)]
    assert len(unit) == 1 and getattr(gm, str(unit[0].target)).device == gm.get_buffer(
        str(fp8.nodes(gm, aten._scaled_mm.default)[0].args[1].args[0].target)).device


class _Heads(nn.Module):
    """Multi-head attention written the usual way: the o_proj reads the attention output through a transpose."""

    def __init__(self, d: int = 64, heads: int = 4, last: bool = False) -> None:
        super().__init__()
        self.heads, self.last = heads, last
        self.qkv, self.o_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
        out = out[:, -1] if self.last else out.reshape(b, t, d)  # decoding reads the last token only
        return self.o_proj(out.reshape(b, -1, d))


@pytest.mark.parametrize("last", [False, True])
def test_realize_permuted_writes_an_attention_output_contiguous_before_its_quantization(fp8, last: bool) -> None:
    from recfx.passes.utils import force_strides_op

    torch.manual_seed(0)
    force = force_strides_op()
    model = _Heads(last=last).eval()
    x = torch.randn(2, 8, 64)
    quant = QuantConfig(rules=(QuantRule("include", path="qkv"), QuantRule("include", path="o_proj")))
    gms = []
    for realize in (False, True):
        gm, _ = fp8.run(model, (x,), list(fp8_passes()), quant=quant)
        _, summary = _lower(gm, PassContext(backend_options={"realize_permuted": realize}))
        gms.append(gm)
        if realize:  # the o_proj's input only: qkv reads the block's input, not a permute
            assert summary.realized == 1 and "contiguous rows before their quantization: 1" in summary.render()
            (node,) = fp8.nodes(gm, force)
            assert node.args[1] == [64, 1] and node.args[0].target is aten.reshape.default
        else:
            assert summary.realized == 0 and not fp8.nodes(gm, force)
    with torch.inference_mode():
        want, got = (gm(x) for gm in gms)
    assert torch.equal(got, want)  # a copy in another layout: the same values


def test_realize_permuted_takes_a_bool(fp8, toy) -> None:
    gm, _ = fp8.run(*toy, list(fp8_passes()))
    with pytest.raises(ValueError, match="realize_permuted"):
        _lower(gm, PassContext(backend_options={"realize_permuted": "yes"}))


class _SwiGLU(nn.Module):
    """A LLaMA-style MLP: ``down(SiLU(gate(x)) * up(x))`` (``swap``: ``up(x) * SiLU(gate(x))``; ``broadcast``: up
    is one row, broadcast over the tokens)."""

    def __init__(self, d: int = 32, ff: int = 48, swap: bool = False, broadcast: bool = False) -> None:
        super().__init__()
        self.swap, self.broadcast = swap, broadcast
        self.gate, self.up, self.down = (nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False),
                                         nn.Linear(ff, d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, u = torch.nn.functional.silu(self.gate(x)), self.up(x[:, :1] if self.broadcast else x)
        return self.down(u * g if self.swap else g * u)


_MLP_QUANT = QuantConfig(rules=tuple(QuantRule("include", path=p) for p in ("gate", "up", "down")))


@pytest.mark.parametrize("swap", [False, True])
def test_silu_quant_kernel_quantizes_a_swiglu_product_with_the_op(fp8, swap: bool) -> None:
    torch.manual_seed(0)
    model = _SwiGLU(swap=swap).eval()
    x = torch.randn(2, 5, 32)
    gms = []
    for on in (False, True):
        gm, _ = fp8.run(model, (x,), list(fp8_passes()), quant=_MLP_QUANT)
        _, summary = _lower(gm, PassContext(backend_options={"silu_quant_kernel": on}))
        gms.append(gm)
        assert fp8.count(gm, ops.silu_mul_fp8.default) == summary.silu_kernels == int(on)
        assert fp8.count(gm, aten._scaled_mm.default) == 3
    assert "quantized by recfx::silu_mul_fp8: 1" in summary.render()
    with torch.inference_mode():
        want, got = (gm(x) for gm in gms)
        exact = model.double()(x.double())
    # the op quantizes the float32 product as the float32 recipe does: at most a rare E4M3 step apart, and as close
    # to the float64 model (three FP8 GEMMs at K = 32-48: cosine ~0.998)
    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))

    assert cos(got, want) > 0.99999
    assert cos(got, exact) > max(0.995, cos(want, exact) - 1e-4)


def test_silu_quant_kernel_leaves_a_broadcast_product_to_inductor(fp8) -> None:
    """A broadcast ``up`` (the op takes rows of one shape) keeps the aten quantization."""
    model = _SwiGLU(broadcast=True).eval()
    gm, _ = fp8.run(model, (torch.randn(2, 5, 32),), list(fp8_passes()), quant=_MLP_QUANT)
    _, summary = _lower(gm, PassContext(backend_options={"silu_quant_kernel": True}))
    assert summary.silu_kernels == 0 and fp8.count(gm, ops.silu_mul_fp8.default) == 0


def test_silu_quant_kernel_with_exact_quant_is_an_error(fp8) -> None:
    """The op has the float32 recipe only: asking for it and for the round-to-odd one says to give one."""
    gm, _ = fp8.run(_SwiGLU().eval(), (torch.randn(2, 5, 32),), list(fp8_passes()), quant=_MLP_QUANT)
    with pytest.raises(ValueError, match="give one of them"):
        _lower(gm, PassContext(backend_options={"silu_quant_kernel": True, "exact_quant": True}))


class _Written(nn.Module):
    """SwiGLU products whose value is changed after the op would have read gate and up: a write into the product,
    into the SiLU, or (``both``: ``SiLU(a) * SiLU(b)``) into ``a`` after the product."""

    def __init__(self, case: str, d: int = 32, ff: int = 48) -> None:
        super().__init__()
        self.case = case
        self.gate, self.up, self.down = (nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False),
                                         nn.Linear(ff, d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, u = self.gate(x), self.up(x)
        if self.case == "product":
            h = torch.nn.functional.silu(a) * u
            h[..., :8] = 0
            return self.down(h)
        if self.case == "silu":
            s = torch.nn.functional.silu(a)
            s[..., :8] = 0
            return self.down(s * u)
        h = torch.nn.functional.silu(a) * torch.nn.functional.silu(u)
        a.mul_(-4.0)
        return self.down(h) + a[..., :32]


@pytest.mark.parametrize("case", ["product", "silu", "both"])
def test_silu_quant_kernel_keeps_the_values_a_write_changed(fp8, case: str) -> None:
    """The op recomputes the product at the GEMM, so a product whose SiLU or product is written in place is left to
    the aten quantization. SiLU(a) * SiLU(b) with ``a`` written after the product is taken in the one order that
    reads no written tensor (gate ``b``, up ``SiLU(a)``, a value computed before the write): the same function."""
    torch.manual_seed(0)
    model = _Written(case).eval()
    x = torch.randn(2, 5, 32)
    outs = []
    for on in (False, True):
        gm, _ = fp8.run(model, (x,), list(fp8_passes()), quant=_MLP_QUANT)
        _, summary = _lower(gm, PassContext(backend_options={"silu_quant_kernel": on}))
        with torch.inference_mode():
            outs.append(gm(x))
    if case == "both":
        assert summary.silu_kernels == 1
        assert float(torch.nn.functional.cosine_similarity(outs[0].flatten(), outs[1].flatten(), dim=0)) > 0.99999
    else:
        assert summary.silu_kernels == 0 and torch.equal(outs[0], outs[1])


def test_silu_quant_kernel_takes_a_bool(fp8, toy) -> None:
    gm, _ = fp8.run(*toy, list(fp8_passes()))
    with pytest.raises(ValueError, match="silu_quant_kernel"):
        _lower(gm, PassContext(backend_options={"silu_quant_kernel": 1}))


def test_a_gemm_reading_a_lowered_gemm_is_lowered_too(fp8) -> None:  # found by the fuzzer (linear -> linear)
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(*(nn.Linear(16, 16, bias=i % 2 == 0) for i in range(5)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(torch.tanh(x))

    model = Chain().eval()
    x = torch.randn(2, 5, 16)
    gm, _ = fp8.run(model, (x,), list(fp8_passes()))
    with torch.inference_mode():
        want = gm(x)
    gemms = fp8.count(gm, ops.fp8_linear.default)
    _, summary = _lower(gm)
    assert gemms >= 3 and summary.lowered == gemms and summary.kept == []
    assert fp8.count(gm, ops.fp8_linear.default) == 0 and fp8.count(gm, aten._scaled_mm.default) == gemms
    assert _still_reference(gm) == []  # the pass's postcondition
    with torch.inference_mode():
        assert torch.equal(gm(x), want)
