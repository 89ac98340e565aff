"""``lower_fp8_attention`` (cuda-fp8's opt-in FP8 attention) and the ``recfx::fp8_attention`` op, on the CPU (the op's
reference implementation)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import recfx
from recfx.models import get_model
from recfx.ops.fp8_attention import quantize_tokens, quantize_values
from recfx.ops.fp8_terms import EAGER
from recfx.passes import PASSES, PassContext
from recfx.passes.utils import op_histogram

_FP8_ATTENTION = "recfx.fp8_attention.default"
_SDPA = "aten.scaled_dot_product_attention.default"


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _lower(gm: torch.fx.GraphModule, *names: str, **options: object) -> list[object]:
    ctx = PassContext(backend_options={"fp8_attention": True, **options})
    return [PASSES.get(name).instantiate(ctx)(gm) for name in names]


def test_onerec_cross_attentions_in_fp8_golden_counts() -> None:
    """onerec-tiny: the 12 cross-attentions (GQA folded) become FP8 attention; the 12 causal self-attentions over the
    beam tokens stay math; K and V (one context K/V for every layer) are quantized once each, every query once."""
    spec = get_model("onerec-tiny")
    cfg = spec.config
    compiled = recfx.compile(spec.build(), spec.example_inputs(2), backend="eager")
    gm = copy.deepcopy(compiled.graph_module)
    fold, tiny = _lower(gm, "fold_gqa_attention", "lower_tiny_attention")
    clones = op_histogram(gm).get("aten.clone.default", 0)
    (fp8,) = _lower(gm, "lower_fp8_attention")
    assert fold.changed_nodes == tiny.changed_nodes == fp8.changed_nodes == cfg.n_layers * cfg.levels == 12
    assert op_histogram(gm).get("aten.clone.default", 0) == clones + 1  # V transposed once; no output copies
    assert "14 Q/K/V quantized" in fp8.detail  # 12 queries + K + V
    hist = op_histogram(gm)
    assert hist.get(_FP8_ATTENTION) == 12 and _SDPA not in hist
    assert "aten.constant_pad_nd.default" not in hist  # 200 keys -> V rows padded to 208, by a cat
    fresh = spec.example_inputs(3, seed=4)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    assert _cos(got[1], want[1]) >= 0.999  # float32 model: FP8 products in 12 attentions


def test_option_off_and_backend_accepts_it() -> None:
    spec = get_model("onerec-tiny")
    compiled = recfx.compile(spec.build(), spec.example_inputs(2), backend="eager")
    gm = copy.deepcopy(compiled.graph_module)
    ctx = PassContext(backend_options={})
    assert not PASSES.get("lower_fp8_attention").instantiate(ctx)(gm).modified  # off by default
    from recfx.backends import BACKENDS

    backend = BACKENDS.get("cuda-fp8")()
    assert "fp8_attention" not in backend.inductor_options(PassContext(backend_options={"fp8_attention": True}))


class _Encoder(nn.Module):
    """Attention as people write it with SDPA (a BERT-style encoder layer, optional mask / causal / dropout)."""

    def __init__(self, d: int = 128, heads: int = 2, **sdpa: object) -> None:
        super().__init__()
        self.qkv, self.o, self.heads, self.sdpa = nn.Linear(d, 3 * d), nn.Linear(d, d), heads, sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, **self.sdpa)  # type: ignore[arg-type]
        return self.o(out.transpose(1, 2).reshape(b, n, d))


def _captured(model: nn.Module, x: torch.Tensor) -> tuple[torch.fx.GraphModule, recfx.CompiledModule]:
    compiled = recfx.compile(model.eval(), (x,), backend="eager")
    return copy.deepcopy(compiled.graph_module), compiled


@pytest.mark.parametrize("dims", [{0: "batch"}, {0: "batch", 1: "rows"}])
def test_dynamic_shapes_stay_symbolic(dims: dict[int, str]) -> None:
    """Dynamic batch (40 keys: V rows padded to 48) or dynamic batch and rows (a symbolic key count: not padded):
    the rewrite adds no shape guard and no copy of the output, and the new nodes keep the symbolic batch."""
    x = torch.randn(2, 40, 128)
    cfg = recfx.CompileConfig(dynamic_dims={"x": dims})
    compiled = recfx.compile(_Encoder().eval(), (x,), backend="eager", config=cfg)
    gm = copy.deepcopy(compiled.graph_module)
    shape_env = next(n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder").fake_mode.shape_env
    guards = len(shape_env.guards)
    before = op_histogram(gm)
    (result,) = _lower(gm, "lower_fp8_attention")
    after = op_histogram(gm)
    assert result.changed_nodes == 1 and len(shape_env.guards) == guards
    assert after.get("aten.cat.default", 0) == before.get("aten.cat.default", 0) + (1 if len(dims) == 1 else 0)
    assert after.get("aten.clone.default", 0) == before.get("aten.clone.default", 0) + 1  # V's transpose only
    op = next(n for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_attention.default)
    assert all(isinstance(n.meta["val"].shape[0], torch.SymInt) for n in [op, *op.args[:6]])
    y = torch.randn(3, 40 if len(dims) == 1 else 24, 128)
    with torch.inference_mode():
        assert _cos(gm(y), compiled(y)) >= 0.999


def test_sdpa_encoder_is_rewritten_and_accurate() -> None:
    x = torch.randn(2, 48, 128)
    gm, compiled = _captured(_Encoder(), x)
    clones = op_histogram(gm).get("aten.clone.default", 0)
    (result,) = _lower(gm, "lower_fp8_attention")
    assert result.changed_nodes == 1 and op_histogram(gm).get(_FP8_ATTENTION) == 1
    op = next(n for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_attention.default)
    assert "nn_module_stack" in op.meta and "val" in op.meta  # the replaced SDPA's source location, fake metadata
    # the op writes SDPA's (B, N, H, D) layout itself (heads_inner): the only copy is V's transpose
    assert op_histogram(gm).get("aten.clone.default", 0) == clones + 1
    y = torch.randn(3, 48, 128)  # another batch: the batch stays dynamic
    with torch.inference_mode():
        assert _cos(gm(y), compiled(y)) >= 0.999


class _SequenceFirst(nn.Module):
    """Sequence-first attention ((N, B, d) activations, as nn.MultiheadAttention's default): SDPA's output is laid out
    (N, B, H, D) in memory, neither contiguous nor (B, N, H, D)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(128, 384)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b, d = x.shape
        q, k, v = self.qkv(x).view(n, b, 3, 2, 64).permute(2, 1, 3, 0, 4)
        return F.scaled_dot_product_attention(q, k, v).permute(2, 0, 1, 3).reshape(n, b, d)


def test_other_output_layout_is_copied() -> None:
    x = torch.randn(24, 2, 128)
    gm, compiled = _captured(_SequenceFirst(), x)
    clones = op_histogram(gm).get("aten.clone.default", 0)
    (result,) = _lower(gm, "lower_fp8_attention")
    assert result.changed_nodes == 1
    assert op_histogram(gm).get("aten.clone.default", 0) == clones + 2  # V's transpose and the output's layout
    op = next(n for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_attention.default)
    (copy_back,) = list(op.users)  # permute -> clone -> permute to SDPA's strides
    assert copy_back.target is torch.ops.aten.permute.default
    with torch.inference_mode():
        assert _cos(gm(x), compiled(x)) >= 0.999


def test_explicit_scale() -> None:
    x = torch.randn(2, 24, 128)
    gm, compiled = _captured(_Encoder(scale=0.3), x)
    (result,) = _lower(gm, "lower_fp8_attention")
    op = next(n for n in gm.graph.nodes if n.target is torch.ops.recfx.fp8_attention.default)
    assert result.changed_nodes == 1 and op.args[6] == 0.3
    with torch.inference_mode():
        assert _cos(gm(x), compiled(x)) >= 0.999


@pytest.mark.parametrize("kind", ["causal", "mask", "dropout", "head_dim", "float64"])
def test_left_alone(kind: str) -> None:
    d, heads, sdpa = 128, 2, {}
    x = torch.randn(2, 24, 128)
    if kind == "causal":
        sdpa = {"is_causal": True}
    elif kind == "mask":
        sdpa = {"attn_mask": torch.ones(24, 24, dtype=torch.bool).tril()}
    elif kind == "dropout":
        sdpa = {"dropout_p": 0.1}  # dropout in an inference graph: not a plain attention
    elif kind == "head_dim":
        d, heads, x = 96, 2, torch.randn(2, 24, 96)  # head dim 48: not a kernel head dim
    elif kind == "float64":
        x = x.double()
    model = _Encoder(d, heads, **sdpa)
    if kind == "float64":
        model = model.double()
    gm, _ = _captured(model, x)
    before = op_histogram(gm).get(_SDPA)
    (result,) = _lower(gm, "lower_fp8_attention")
    assert not result.modified and op_histogram(gm).get(_SDPA) == before


def test_mutated_kv_is_left_alone() -> None:
    """K/V whose storage is written in place anywhere (here after the attention) keep the float attention: a quantized
    snapshot shared with a later reader would be stale."""
    gm, _ = _captured(_Encoder(), torch.randn(2, 24, 128))
    sdpa = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.scaled_dot_product_attention.default)
    with gm.graph.inserting_after(sdpa):
        gm.graph.call_function(torch.ops.aten.mul_.Scalar, (sdpa.args[1], 2.0))
    gm.recompile()
    (result,) = _lower(gm, "lower_fp8_attention")
    assert not result.modified


def test_op_checks_its_arguments() -> None:
    q, k, v = (torch.randn(1, 2, 8, 32) for _ in range(3))
    qq, qs = quantize_tokens(EAGER, q)
    kq, ks = quantize_tokens(EAGER, k)
    vt, vs = quantize_values(EAGER, v)
    op = torch.ops.recfx.fp8_attention
    assert op(qq, qs, kq, ks, vt, vs, 0.2, torch.float32).shape == (1, 2, 8, 32)
    with pytest.raises(ValueError, match="q_q must be a float8_e4m3fn"):
        op(q, qs, kq, ks, vt, vs, 0.2, torch.float32)
    with pytest.raises(ValueError, match="vt_q must be"):
        op(qq, qs, kq, ks, vt.transpose(-1, -2), vs, 0.2, torch.float32)
    with pytest.raises(ValueError, match="k_scale must be float32"):
        op(qq, qs, kq, ks[..., :4], vt, vs, 0.2, torch.float32)
    with pytest.raises(ValueError, match="head dim 16"):
        small = torch.randn(1, 2, 8, 16)
        op(*quantize_tokens(EAGER, small), *quantize_tokens(EAGER, small), *quantize_values(EAGER, small), 0.2,
           torch.float32)
