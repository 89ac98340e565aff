"""eager-fp8 / inductor-fp8: registration, auto-fp8 choice, recfx.compile options, numerics, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import recfx
from recfx.analysis.numerics import sqnr_db
from recfx.backends import BACKENDS, resolve_backend
from recfx.errors import BackendUnavailableError, PassError
from recfx.models.common import SwiGLU

ops = torch.ops.recfx


class _Block(nn.Module):
    """norm -> MLP (two quantizable linears) -> residual -> head."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, 100)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head(h + self.mlp(torch.nn.functional.layer_norm(h, h.shape[-1:])))


@pytest.fixture
def block() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return _Block().eval(), (torch.randint(0, 100, (2, 12)),)


def test_registered_with_priorities() -> None:
    eager, inductor = BACKENDS.get("eager-fp8"), BACKENDS.get("inductor-fp8")
    assert eager.fp8 and inductor.fp8 and (eager.priority, inductor.priority) == (1, 11)
    assert issubclass(eager, BACKENDS.get("eager")) and issubclass(inductor, BACKENDS.get("inductor"))
    be, why = resolve_backend("auto-fp8")
    assert be.fp8 and "auto-fp8" in why
    assert not resolve_backend("auto")[0].fp8


def test_eager_fp8_compile_and_report(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    fast = recfx.compile(model, inputs, backend="eager-fp8")
    gm = fast.graph_module
    assert sum(n.target is ops.fp8_linear.default for n in gm.graph.nodes) == 2  # mlp only; head stays float
    fresh = (torch.randint(0, 100, (5, 12)),)
    with torch.inference_mode():
        assert sqnr_db(model(*fresh), fast(*fresh)) > 25
    section = fast.report.sections["fp8"]
    assert section.quantized == 2 and section.output_cosine > 0.999
    text = str(fast.report)
    assert "FP8 E4M3" in text and "mlp.0" in text
    assert fast.report.to_dict()["sections"]["fp8"]["quantized"] == 2


def test_inductor_fp8_matches_eager_fp8(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    quant = recfx.QuantConfig(activation="static_per_tensor", calibrator="percentile", progress=False)
    calib = [(torch.randint(0, 100, (4, 12)),) for _ in range(3)]
    eager = recfx.compile(model, inputs, backend="eager-fp8", quant=quant, calibration=calib)
    fast = recfx.compile(model, inputs, backend="inductor-fp8", quant=quant, calibration=calib)
    assert fast.report.backend == "inductor-fp8"
    fresh = (torch.randint(0, 100, (3, 12)),)
    with torch.inference_mode():
        torch.testing.assert_close(fast(*fresh), eager(*fresh), rtol=1e-4, atol=1e-4)
    assert fast.report.sections["fp8"].batches == 3


def test_static_without_calibration_and_options_on_float_backends(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    with pytest.raises(ValueError, match="needs calibration data"):
        recfx.compile(model, inputs, backend="eager-fp8", quant=recfx.QuantConfig(activation="static_per_tensor"))
    with pytest.raises(ValueError, match="does not quantize"):
        recfx.compile(model, inputs, backend="eager", quant=recfx.QuantConfig())
    with pytest.raises(TypeError, match="must be a recfx.QuantConfig"):
        recfx.compile(model, inputs, backend="eager-fp8", quant="fp8")


def test_failed_calibration_leaves_the_model_untouched(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        out_before = model(*inputs)
    quant = recfx.QuantConfig(activation="static_per_tensor", progress=False)
    with torch.no_grad():
        model.embed.weight[7, 0] = float("nan")  # only token 7 is poisoned: the second batch hits it
    with pytest.raises(PassError, match=r"calibration batch 1: NaN in the activation feeding layer mlp\.0"):
        recfx.compile(model, inputs, backend="eager-fp8", quant=quant,
                      calibration=[(torch.full((2, 12), 3),), (torch.full((2, 12), 7),)])
    with torch.no_grad():
        model.embed.weight[7, 0] = before["embed.weight"][7, 0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.inference_mode():
        assert torch.equal(model(*inputs), out_before)


def test_cuda_fp8_without_a_gpu_is_a_clear_error(block) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    model, inputs = block
    with pytest.raises(BackendUnavailableError, match="cuda-fp8.*CUDA GPU with FP8 tensor cores.*eager-fp8"):
        recfx.compile(model, inputs, backend="cuda-fp8")
    assert resolve_backend("auto-fp8")[0].name != "cuda-fp8"  # auto may choose; here it chooses a CPU backend
    assert BACKENDS.get("cuda-fp8").priority > BACKENDS.get("inductor-fp8").priority  # first choice on a GPU


@pytest.mark.parametrize("recipe", ["default", "onerec_v2"])
def test_cuda_fp8_pipeline_routes_an_fp8_moe(monkeypatch, recipe: str) -> None:  # type: ignore[no-untyped-def]
    """cuda-fp8's whole pipeline on a small OneRec MoE, run by Inductor on the CPU (the GPU-only pieces stood in:
    availability, routing's CUDA check, a float32 emulation of ``aten._scaled_grouped_mm``): every MoE layer is
    routed onto grouped FP8 GEMMs (row-wise, or ``recfx::fp8_block_mm`` for the OneRec-V2 recipe's 128-blocks) and
    the scores match eager-fp8's. The FP8 MoE path has not completed a GPU run; this keeps it from failing there on
    something a CPU can catch."""
    import dataclasses

    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend
    from recfx.models import get_model
    from recfx.models.onerec import OneRecModel, onerec_inputs
    from recfx.passes import route_moe

    monkeypatch.setattr(CudaFp8Backend, "availability", lambda self: Availability(True, ""))
    init = route_moe._RouteMoe.__init__
    monkeypatch.setattr(route_moe._RouteMoe, "__init__",
                        lambda self, fp8, fast_accum=True, exact_quant=False, cuda_only=True:
                        init(self, fp8, fast_accum, exact_quant, cuda_only=False))

    def emulated(a, b, scale_a, scale_b, offs=None, bias=None, scale_result=None, out_dtype=None,  # type: ignore[no-untyped-def]
                 use_fast_accum=False):
        return torch._grouped_mm(a.float() * scale_a.reshape(-1, 1), b.float() * scale_b[:, None, :],
                                 offs=offs).to(out_dtype)

    lib = torch.library.Library("aten", "IMPL")
    lib.impl("_scaled_grouped_mm", emulated, "CPU")
    try:
        cfg = dataclasses.replace(get_model("onerec-moe").config, d_model=128, n_heads=4, d_head=32, kv_groups=2,
                                  d_ff=256, d_expert=128, pathway_tokens=(8, 16), vocab=256, beam=16, n_layers=1,
                                  n_moe_layers=1, n_experts=6, top_k=2)
        torch.manual_seed(0)
        model = OneRecModel(cfg).eval().to(torch.bfloat16)
        inputs = onerec_inputs(cfg, 2, torch.Generator().manual_seed(0), torch.bfloat16)
        quant = recfx.QuantConfig.onerec_v2() if recipe == "onerec_v2" else None
        fast = recfx.compile(model, inputs, backend="cuda-fp8", quant=quant)
        routed = {r.name: r.detail for r in fast.report.passes}["route_moe_experts_fp8"]
        assert routed.startswith(f"{cfg.n_moe_layers * cfg.levels} MoE layer(s)")
        targets = [n.target for n in fast.graph_module.graph.nodes]
        grouped = (torch.ops.recfx.fp8_block_mm.default if recipe == "onerec_v2"
                   else torch.ops.aten._scaled_grouped_mm.default)
        assert targets.count(grouped) >= 3 * cfg.levels  # w1, w3, w2 of each routed layer (and block dense GEMMs)
        reference = recfx.compile(model, inputs, backend="eager-fp8", quant=quant)
        fresh = onerec_inputs(cfg, 3, torch.Generator().manual_seed(5), torch.bfloat16)
        with torch.inference_mode():
            got, want = fast(*fresh)[1].float(), reference(*fresh)[1].float()
        assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9999
    finally:
        lib._destroy()


class _Attention(nn.Module):
    """Self-attention as transformers write it: the o_proj reads the SDPA output through a transpose."""

    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.o_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).contiguous().view(b, t, d))


def test_cuda_fp8_realize_permuted_through_inductor(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``realize_permuted``: the o_proj's input (read through the attention's transpose) goes through Inductor's
    stride prim before its quantization, and so do the attention's probabilities; Inductor (on the CPU, the GPU check
    stood in) compiles it, and the output matches eager-fp8's within the FP8 tolerance; the qkv GEMM's input (no
    permute) is left alone."""
    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend

    monkeypatch.setattr(CudaFp8Backend, "availability", lambda self: Availability(True, ""))
    torch.manual_seed(0)
    model = _Attention().eval().to(torch.bfloat16)
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    quant = recfx.QuantConfig(rules=(recfx.QuantRule("include", path="qkv"),
                                     recfx.QuantRule("include", path="o_proj")))
    config = recfx.CompileConfig(backend_options={"realize_permuted": True})
    fast = recfx.compile(model, (x,), backend="cuda-fp8", quant=quant, config=config)
    assert fast.report.sections["fp8_gemm"].realized == 1
    from recfx.passes.utils import force_strides_op

    force = force_strides_op()
    # the o_proj's input, and the probabilities of the attention (8 tokens: lowered to math by tiny_attention)
    assert [n.target for n in fast.graph_module.graph.nodes].count(force) == 2
    reference = recfx.compile(model, (x,), backend="eager-fp8", quant=quant)
    fresh = torch.randn(3, 8, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        got, want = fast(fresh).float(), reference(fresh).float()
    # 0.99977 with and without the option (torch 2.13, CPU): Inductor's float32 intermediates vs eager's bf16 ones
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9995


def test_cuda_fp8_silu_quant_kernel_through_inductor(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``silu_quant_kernel``: the down projection's input is quantized by ``recfx::silu_mul_fp8``, which Inductor (on
    the CPU, the GPU check stood in) calls as an extern op between the GEMMs; the output matches eager-fp8's."""
    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend

    monkeypatch.setattr(CudaFp8Backend, "availability", lambda self: Availability(True, ""))
    torch.manual_seed(0)
    model = SwiGLU(64, 176).eval().to(torch.bfloat16)
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    quant = recfx.QuantConfig(rules=tuple(recfx.QuantRule("include", path=p) for p in ("w1", "w3", "w2")))
    config = recfx.CompileConfig(backend_options={"silu_quant_kernel": True})
    fast = recfx.compile(model, (x,), backend="cuda-fp8", quant=quant, config=config)
    assert fast.report.sections["fp8_gemm"].silu_kernels == 1
    targets = [n.target for n in fast.graph_module.graph.nodes]
    assert targets.count(torch.ops.recfx.silu_mul_fp8.default) == 1
    reference = recfx.compile(model, (x,), backend="eager-fp8", quant=quant)
    fresh = torch.randn(3, 8, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        got, want = fast(fresh).float(), reference(fresh).float()
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9995


class _AttentionMlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = _Attention(), SwiGLU(64, 176)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


@pytest.mark.parametrize(("options", "realized", "silu"), [
    ({}, 1, 1),  # cuda-fp8's defaults: both on
    ({"silu_quant_kernel": False, "realize_permuted": False}, 0, 0),
    ({"exact_quant": True}, 1, 0),  # the op has no round-to-odd recipe: off unless asked for (then an error)
])
def test_cuda_fp8_pass_defaults_apply_unless_overridden(monkeypatch, options, realized, silu) -> None:  # type: ignore[no-untyped-def]
    """``CudaFp8Backend.pass_defaults`` turn on ``realize_permuted`` and ``silu_quant_kernel`` where the user gives
    no value; the report's ``backend_defaults`` section says what was in force."""
    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend

    monkeypatch.setattr(CudaFp8Backend, "availability", lambda self: Availability(True, ""))
    torch.manual_seed(0)
    model = _AttentionMlp().eval().to(torch.bfloat16)
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    quant = recfx.QuantConfig(rules=tuple(recfx.QuantRule("include", path=p)
                                          for p in ("attn.qkv", "attn.o_proj", "mlp.w1", "mlp.w3", "mlp.w2")))
    fast = recfx.compile(model, (x,), backend="cuda-fp8", quant=quant,
                         config=recfx.CompileConfig(backend_options=options))
    summary = fast.report.sections["fp8_gemm"]
    assert (summary.realized, summary.silu_kernels) == (realized, silu)
    in_force = fast.report.sections["backend_defaults"].to_dict()
    assert in_force == {"realize_permuted": bool(realized), "silu_quant_kernel": bool(silu)}
    assert "pass options in force" in fast.report.sections["backend_defaults"].render()
