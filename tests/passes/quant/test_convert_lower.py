"""fp8_prepare / fp8_convert / fp8_lower: structure (op counts and order), shared Q/DQ, weights untouched."""

from __future__ import annotations

import operator

import pytest
import torch

from recfx import QuantConfig, QuantRule
from recfx.analysis.numerics import sqnr_db
from recfx.passes.quant import FP8_PASSES
from recfx.passes.quant.state import PLAN, ActivationObserver

ops = torch.ops.recfx
aten = torch.ops.aten
UNTIL_CONVERT = ["fp8_annotate", "fp8_prepare", "fp8_calibrate", "fp8_evaluate", "fp8_convert"]
UNTIL_LOWER = [*UNTIL_CONVERT, "fp8_lower"]


def test_prepare_shares_one_observer_per_tensor(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    gm, _ = fp8.run(*toy, ["fp8_annotate", "fp8_prepare"])
    obs = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target),
                                                                            ActivationObserver)]
    assert len(obs) == 3  # q/k/v input, o_proj input, experts' input
    qkv = next(o for o in obs if len(o.users) == 3)
    assert sorted(u.meta[PLAN].name for u in qkv.users) == ["attn.k_proj", "attn.q_proj", "attn.v_proj"]
    assert all(u.target is aten.linear.default for o in obs for u in o.users)


def test_convert_dynamic_structure(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, inputs = toy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm, _ = fp8.run(model, inputs, UNTIL_CONVERT)
    assert fp8.count(gm, ops.quantize_fp8_per_token.default) == 3
    assert fp8.count(gm, ops.dequantize_fp8.default) == 3 + 6  # 3 activations + 6 weights
    assert not any(n.op == "call_module" and "_fp8_observer" in str(n.target) for n in gm.graph.nodes)
    linears = fp8.nodes(gm, aten.linear.default)
    quantized = [n for n in linears if PLAN in n.meta]
    assert len(linears) == 9 and len(quantized) == 6
    for n in quantized:
        assert n.args[0].target is ops.dequantize_fp8.default and n.args[1].target is ops.dequantize_fp8.default
        w_q = n.args[1].args[0]
        assert w_q.op == "get_attr" and getattr(gm, w_q.target).dtype == torch.float8_e4m3fn
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # parameters never modified
    assert not hasattr(gm.attn, "q_proj") or not hasattr(gm.attn.q_proj, "weight")  # float weight dropped
    x = inputs[0]
    with torch.no_grad():
        assert sqnr_db(model(x), gm(x)) > 25  # fake quant is FP8-accurate


def test_lower_dynamic_folds_into_fp8_linear(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    fake, _ = fp8.run(model, (x,), UNTIL_CONVERT)
    gm, _ = fp8.run(model, (x,), UNTIL_LOWER)
    gemms = fp8.nodes(gm, ops.fp8_linear.default)
    assert len(gemms) == 6 and fp8.count(gm, aten.linear.default) == 3
    assert all(n.args[4] is None for n in gemms)  # dynamic per-token: no static scale
    for target in (ops.quantize_fp8_per_token.default, ops.dequantize_fp8.default, operator.getitem):
        assert fp8.count(gm, target) == 0
    names = [n.meta[PLAN].name for n in gemms]
    assert names == fp8.DEFAULT_QUANTIZED  # graph order
    with torch.no_grad():
        torch.testing.assert_close(gm(x), fake(x), rtol=1e-4, atol=1e-4)  # lowering keeps the numerics


def test_static_and_block_variants(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    quant = QuantConfig(activation="static_per_tensor", progress=False,
                        rules=(QuantRule("include", kind="expert", weight="block", activation="block"),))
    calib = [(x * s,) for s in (0.5, 1.0, 1.5)]
    fake, _ = fp8.run(model, (x,), UNTIL_CONVERT, quant=quant, calibration=calib)
    assert fp8.count(fake, ops.quantize_fp8.default) == 2  # shared static Q for q/k/v, one for o_proj
    assert fp8.count(fake, ops.quantize_fp8_groups.default) == 1
    assert fp8.count(fake, ops.dequantize_fp8_blocks.default) == 1 + 2  # experts' activation + 2 block weights
    gm, _ = fp8.run(model, (x,), UNTIL_LOWER, quant=quant, calibration=calib)
    static = fp8.nodes(gm, ops.fp8_linear.default)
    blocks = fp8.nodes(gm, ops.fp8_linear_blocks.default)
    assert len(static) == 4 and len(blocks) == 2
    assert all(n.args[4].op == "get_attr" and getattr(gm, n.args[4].target).shape == () for n in static)
    assert all(n.args[4] == 128 for n in blocks)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), fake(x), rtol=1e-4, atol=1e-4)
        assert sqnr_db(model(x), gm(x)) > 25


def test_full_pipeline_reports(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    _, ctx = fp8.run(model, (x,), list(FP8_PASSES))
    report = ctx.report_sections["fp8"]
    assert report.quantized == 6 and report.linears == 9
    assert [r.name for r in report.layers] == fp8.DEFAULT_QUANTIZED
    assert all(r.sqnr_db > 25 for r in report.layers)  # each layer's own FP8 error on Gaussian-ish data
    assert all(r.weight_stats.count > 0 and r.activation_stats.count > 0 for r in report.layers)
    assert report.output_cosine > 0.999
    text = report.render()
    assert "attn.q_proj" in text and "kept in high precision" in text and "ffn.router" in text
    assert report.to_dict()["layers"][0]["activation_stats"]["kurtosis"] > 0


class _Chained(torch.nn.Module):
    """Two quantized linears back to back (no op between), the second's input written in place first."""

    def __init__(self, write: bool) -> None:
        super().__init__()
        self.write = write
        self.ffn1 = torch.nn.Linear(8, 16)
        self.ffn2 = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ffn1(x)  # (B, T, 16)
        if self.write:
            h[..., :8] *= 4.0  # in place, after h is produced and before ffn2 reads it
        return self.ffn2(h)


def test_lower_chained_linears(fp8) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzzer (seed 373): a linear reading an FP8 GEMM made earlier in the same pass had no metadata,
    so it stayed a fake-quant linear (postcondition failure; wrong numbers without invariant checks)."""
    torch.manual_seed(0)
    model, x = _Chained(write=False).eval(), torch.randn(2, 3, 8)
    gm, _ = fp8.run(model, (x,), list(FP8_PASSES), quant=QuantConfig(default_exclusions=False, progress=False))
    assert fp8.count(gm, ops.fp8_linear.default) == 2 and fp8.count(gm, aten.linear.default) == 0
    with torch.no_grad():
        assert sqnr_db(model(x), gm(x)) > 20


def test_calibration_sees_in_place_writes(fp8) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzzer (seed 373): the observer sat right after ffn1 and saw h before ``h[..., :8] *= 4``, so the
    static scale of ffn2's input was 4x too small and the FP8 values clipped (SQNR 6 dB instead of ~24 dB)."""
    torch.manual_seed(0)
    model, x = _Chained(write=True).eval(), torch.randn(2, 3, 8)
    calib = [(torch.randn(3, 3, 8),) for _ in range(2)]
    quant = QuantConfig(weight="per_tensor", activation="static_per_tensor", default_exclusions=False, progress=False)
    gm, _ = fp8.run(model, (x,), list(FP8_PASSES), quant=quant, calibration=calib)
    assert fp8.count(gm, ops.fp8_linear.default) == 2
    fresh = torch.randn(5, 3, 8)
    with torch.no_grad():
        assert sqnr_db(model(fresh), gm(fresh)) > 18
    observed, _ = fp8.run(model, (x,), ["fp8_annotate", "fp8_prepare"], quant=quant, calibration=calib)
    order = list(observed.graph.nodes)
    ffn2 = next(n for n in order if n.target is aten.linear.default and n.meta["recfx_fp8"].name == "ffn2")
    written = next(n for n in order if n.target is aten.copy_.default)
    assert order.index(written) < order.index(ffn2.args[0]) < order.index(ffn2)  # observed after the write


class _ChunkWritten(torch.nn.Module):
    """Fuzzer seed 885: a linear reads a chunk of a tensor that is written in place after the chunk was taken."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.softmax(x, dim=-1)  # (B, 4, 16)
        _, right = h.chunk(2, dim=-1)  # a view of h
        h[:, 0] = -2.0  # also writes right[:, 0]
        return self.proj(right)


def test_calibration_sees_writes_through_a_chunk(fp8) -> None:  # type: ignore[no-untyped-def]
    """alias_root walks from a chunk's piece to its source, so the write counts as a write of the piece."""
    torch.manual_seed(0)
    model, x = _ChunkWritten().eval(), torch.randn(2, 4, 16)
    calib = [(torch.randn(3, 4, 16),) for _ in range(2)]
    quant = QuantConfig(weight="per_tensor", activation="static_per_tensor", default_exclusions=False, progress=False)
    gm, _ = fp8.run(model, (x,), list(FP8_PASSES), quant=quant, calibration=calib)
    fresh = torch.randn(5, 4, 16)
    with torch.no_grad():
        assert sqnr_db(model(fresh), gm(fresh)) > 18  # 2 dB before: the scale came from values before the write


class _FakeQuantLinear(torch.nn.Module):
    """One hand-written fake-quant linear: ``act`` picks the activation form, ``w_blocks`` the weight's."""

    def __init__(self, act: str, w_blocks: list[int] | None) -> None:
        super().__init__()
        self.act, self.w_blocks = act, w_blocks
        self.register_buffer("w_q", torch.randn(64, 64).to(torch.float8_e4m3fn))
        self.register_buffer("w_s", torch.ones(1, 1) if w_blocks is not None else torch.ones(64, 1))
        self.register_buffer("s", torch.tensor(0.01))
        self.register_buffer("other_s", torch.tensor(0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.s  # one get_attr node, read by the quantize and the dequantize
        if self.act == "static":
            xd = ops.dequantize_fp8.default(ops.quantize_fp8.default(x, s), s, torch.float32)
        elif self.act == "static_mismatch":  # quantized with one scale, dequantized with another
            xd = ops.dequantize_fp8.default(ops.quantize_fp8.default(x, s), self.other_s, torch.float32)
        elif self.act == "per_token":
            t = ops.quantize_fp8_per_token.default(x)
            xd = ops.dequantize_fp8.default(t[0], t[1], torch.float32)
        else:  # "groups<G>"
            g = int(self.act[len("groups"):])
            t = ops.quantize_fp8_groups.default(x, g)
            xd = ops.dequantize_fp8_blocks.default(t[0], t[1], [g], torch.float32)
        if self.w_blocks is None:
            wd = ops.dequantize_fp8.default(self.w_q, self.w_s, torch.float32)
        else:
            wd = ops.dequantize_fp8_blocks.default(self.w_q, self.w_s, self.w_blocks, torch.float32)
        return aten.linear.default(xd, wd)


@pytest.mark.parametrize("act,w_blocks,gemm,block_size", [
    ("static", None, "fp8_linear", None),
    ("per_token", None, "fp8_linear", None),
    ("groups64", [64, 64], "fp8_linear_blocks", 64),
    ("static_mismatch", None, None, None),  # the scales differ: not the static pattern
    ("groups32", [64, 64], None, None),  # the activation's group and the weight's block disagree
    ("per_token", [64, 64], None, None),  # a per-token activation with a block weight: no GEMM takes both
    ("groups64", None, None, None),  # 1 x 64 activation groups with a per-channel weight: no GEMM either
])
def test_match_fp8_linear_patterns(act: str, w_blocks: list[int] | None, gemm: str | None,
                                   block_size: int | None) -> None:
    """fp8_lower's patterns (recorded from the granularity descriptors) match exactly the forms fp8_convert
    writes, with the scale, block size and GEMM of the pair, and nothing else."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from recfx.passes.quant.lower import match_fp8_linear
    from recfx.passes.utils import fill_meta

    tracer = torch.fx.Tracer()
    tracer.proxy_buffer_attributes = True  # buffers as get_attr nodes, never folded into constants at trace time
    module = _FakeQuantLinear(act, w_blocks)
    gm = torch.fx.GraphModule(module, tracer.trace(module))
    mode = FakeTensorMode()
    next(n for n in gm.graph.nodes if n.op == "placeholder").meta["val"] = mode.from_tensor(torch.randn(4, 64))
    fill_meta(gm)
    linear = next(n for n in gm.graph.nodes if n.target is aten.linear.default)
    m = match_fp8_linear(linear)
    if gemm is None:
        assert m is None
        return
    assert m is not None and m.gemm.op_name == gemm and m.block_size == block_size
    assert m.x.op == "placeholder" and m.w_q.target == "w_q" and m.w_scale.target == "w_s"
    assert (m.x_scale.target if m.x_scale is not None else None) == ("s" if act == "static" else None)
