"""lower_tiny_attention: SDPA over a few tokens as float32 math; the function is SDPA's (float64 compared, 1e-12)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recfx.passes.tiny_attention import MAX_TOKENS, lower_tiny_attention

SDPA = "aten.scaled_dot_product_attention.default"


class Attn(nn.Module):
    def __init__(self, causal=False, mask=None, scale=None, dropout=0.0):
        super().__init__()
        self.causal, self.mask, self.scale, self.dropout = causal, mask, scale, dropout

    def forward(self, q, k, v, mask):
        # (B, L, H, D) -> (B, H, L, D): the usual transposed layout
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if self.mask else None, is_causal=self.causal,
                                             scale=self.scale, dropout_p=self.dropout)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _inputs(b, n, s, mask_kind, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, n, 4, 16, generator=g, dtype=dtype)
    k = torch.randn(b, s, 4, 16, generator=g, dtype=dtype)
    v = torch.randn(b, s, 4, 16, generator=g, dtype=dtype)
    if mask_kind == "bool":
        mask = torch.rand(b, 1, n, s, generator=g) > 0.3
        mask[..., 0] = True
    else:
        mask = torch.randn(b, 1, n, s, generator=g, dtype=dtype)
    return q, k, v, mask


@pytest.mark.parametrize("n,s", [(1, 1), (3, 3), (2, 5), (MAX_TOKENS, MAX_TOKENS)])
@pytest.mark.parametrize("causal,mask", [(False, None), (True, None), (False, "bool"), (False, "float")])
@pytest.mark.parametrize("scale", [None, 0.2])
def test_same_function_as_sdpa(graph_of, count, n, s, causal, mask, scale):
    gm = graph_of(Attn(causal=causal, mask=mask is not None, scale=scale), *_inputs(2, n, s, mask or "bool"))
    inputs = _inputs(3, n, s, mask or "bool")
    want = gm(*inputs)
    assert lower_tiny_attention(gm).changed_nodes == 1
    assert count(gm, SDPA) == 0
    torch.testing.assert_close(gm(*inputs), want, rtol=1e-12, atol=1e-12)


def test_bf16_is_at_least_as_accurate_as_sdpa(graph_of):
    inputs = _inputs(4, 3, 3, "bool", torch.bfloat16)
    gm = graph_of(Attn(causal=True), *inputs)
    sdpa = gm(*inputs)
    exact = Attn(causal=True)(*(t.double() for t in inputs[:3]), None)
    lower_tiny_attention(gm)
    math_form = gm(*inputs)
    assert (math_form.double() - exact).abs().max() <= (sdpa.double() - exact).abs().max() + 1e-3


@pytest.mark.parametrize("causal,mask", [(True, None), (False, "float")])
def test_realized_probabilities_are_the_same_function(graph_of, count, causal, mask):
    """``realize_probs`` (cuda-fp8's realize_permuted): the (B, H, n, s) probabilities go through Inductor's stride
    prim, contiguous, once per attention; the values do not change."""
    from recfx.passes.utils import force_strides_op

    gm = graph_of(Attn(causal=causal, mask=mask is not None), *_inputs(2, 3, 3, mask or "bool"))
    inputs = _inputs(3, 3, 3, mask or "bool")
    want = gm(*inputs)
    assert lower_tiny_attention(gm, realize_probs=True).changed_nodes == 1
    (node,) = [n for n in gm.graph.nodes if n.target is force_strides_op()]
    assert node.args[0].target is torch.ops.aten._softmax.default and node.args[1] == [36, 9, 3, 1]
    torch.testing.assert_close(gm(*inputs), want, rtol=1e-12, atol=1e-12)


class Broadcast(nn.Module):
    """Review find: a 5-D q whose heads dim broadcasts against k's; the scores are wider than q's leading sizes."""

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_probabilities_wider_than_the_query_are_not_realized(graph_of, count):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 4, 3, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 3, 4, 3, 16, generator=g, dtype=torch.float64) for _ in range(2))
    gm = graph_of(Broadcast(), q, k, v)
    want = gm(q, k, v)
    assert lower_tiny_attention(gm, realize_probs=True).modified  # rewritten, but without the prim: strides from
    assert not [n for n in gm.graph.nodes if "inductor_force_stride_order" in str(n.target)]  # q's would overlap
    torch.testing.assert_close(gm(q, k, v), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["long", "dropout"])
def test_leaves_alone(graph_of, case):
    n = MAX_TOKENS + 1 if case == "long" else 3
    gm = graph_of(Attn(dropout=0.5 if case == "dropout" else 0.0), *_inputs(2, n, n, "bool"))
    assert not lower_tiny_attention(gm).modified


def test_onerec_tiny_golden_count():
    """The causal self-attention over the 1-3 target tokens is rewritten; the cross-attention (200 keys) is not."""
    import copy

    import recfx
    from recfx.models import get_model

    spec = get_model("onerec-tiny")
    compiled = recfx.compile(spec.build(), spec.example_inputs(2), backend="eager",
                             config=recfx.CompileConfig(check_numerics=False))
    gm = copy.deepcopy(compiled.graph_module)
    cfg = spec.config
    assert lower_tiny_attention(gm).changed_nodes == cfg.n_layers * cfg.levels == 12
    fresh = spec.example_inputs(3, seed=4)
    with torch.inference_mode():
        want, got = compiled(*fresh), gm(*fresh)
    assert torch.equal(want[0], got[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
