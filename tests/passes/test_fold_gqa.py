"""fold_gqa_attention: GQA attention reads each K/V head once; the function is unchanged (float64, 1e-12)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recfx.passes.fold_gqa import fold_gqa_attention

B, N, T, G, R, D = 2, 5, 7, 2, 3, 8
H = G * R
SDPA = "aten.scaled_dot_product_attention.default"


def _recfx_repeat(x, r):  # (B, T, G, D) -> (B, T, G*r, D), as recfx's models write it
    b, t, g, d = x.shape
    return x[:, :, :, None, :].expand(b, t, g, r, d).reshape(b, t, g * r, d)


def _hf_repeat(x, r):  # (B, G, T, D) -> (B, G*r, T, D), as transformers writes it
    b, g, t, d = x.shape
    return x[:, :, None, :, :].expand(b, g, r, t, d).reshape(b, g * r, t, d)


class Attn(nn.Module):
    """q (B, N, H*D) from a linear; k/v given as (B, T, G, D); ``form`` picks how GQA is written."""

    def __init__(self, form, causal=False, mask=None, scale=None, dropout=0.0):
        super().__init__()
        self.q = nn.Linear(H * D, H * D, bias=False, dtype=torch.float64)
        self.form, self.causal, self.mask, self.scale, self.dropout = form, causal, mask, scale, dropout

    def forward(self, x, k, v, mask):
        q = self.q(x).view(x.shape[0], N, H, D).transpose(1, 2)
        extra = {}
        if self.form == "recfx":
            k, v = _recfx_repeat(k, R).transpose(1, 2), _recfx_repeat(v, R).transpose(1, 2)
        elif self.form == "hf":
            k, v = _hf_repeat(k.transpose(1, 2), R), _hf_repeat(v.transpose(1, 2), R)
        elif self.form == "interleave":
            k, v = k.transpose(1, 2).repeat_interleave(R, dim=1), v.transpose(1, 2).repeat_interleave(R, dim=1)
        elif self.form == "enable_gqa":
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            extra["enable_gqa"] = True
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if self.mask else None, is_causal=self.causal,
                                             scale=self.scale, dropout_p=self.dropout, **extra)
        return out.transpose(1, 2).reshape(x.shape[0], N, H * D)


def _inputs(batch=B, mask_shape=(B, 1, 1, T)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, N, H * D, generator=g, dtype=torch.float64)
    k = torch.randn(batch, T, G, D, generator=g, dtype=torch.float64)
    v = torch.randn(batch, T, G, D, generator=g, dtype=torch.float64)
    mask = torch.rand(*mask_shape, generator=g) > 0.3
    mask[..., 0] = True  # every row sees a key
    return x, k, v, mask


@pytest.mark.parametrize("form", ["recfx", "hf", "interleave", "enable_gqa"])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_folds_every_written_form_exactly(graph_of, count, form, mask, scale):
    gm = graph_of(Attn(form, mask=mask, scale=scale), *_inputs())
    x, k, v, m = _inputs(batch=3, mask_shape=(3, 1, 1, T))  # another batch: the batch stays dynamic
    want = gm(x, k, v, m)
    res = fold_gqa_attention(gm)
    assert res.changed_nodes == 1
    assert count(gm, SDPA) == 1
    (sdpa,) = [n for n in gm.graph.nodes if n.target is torch.ops.aten.scaled_dot_product_attention.default]
    assert sdpa.args[1].meta["val"].shape[1] == G  # the kernel reads G K/V heads, not H
    assert not sdpa.kwargs.get("enable_gqa", False)
    assert count(gm, "aten.expand.default") == 0 and count(gm, "aten.repeat_interleave.self_int") == 0
    torch.testing.assert_close(gm(x, k, v, m), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["causal", "row_mask", "head_mask", "dropout", "no_gqa"])
def test_leaves_alone_what_is_not_row_independent(graph_of, count, case):
    mask_shape = {"row_mask": (B, 1, N, T), "head_mask": (B, H, 1, T)}.get(case, (B, 1, 1, T))
    model = Attn("plain" if case == "no_gqa" else "recfx", causal=case == "causal",
                 mask=case in ("row_mask", "head_mask"), dropout=0.5 if case == "dropout" else 0.0)
    if case == "no_gqa":
        inputs = list(_inputs(mask_shape=mask_shape))
        inputs[1] = torch.randn(B, T, H, D, dtype=torch.float64).transpose(1, 2)
        inputs[2] = torch.randn(B, T, H, D, dtype=torch.float64).transpose(1, 2)
        gm = graph_of(model, *inputs)
    else:
        gm = graph_of(model, *_inputs(mask_shape=mask_shape))
    before = str(gm.graph)
    res = fold_gqa_attention(gm)
    assert not res.modified and res.changed_nodes == 0
    assert str(gm.graph) == before


class WrittenAfterRepeat(nn.Module):
    """The repeat is a snapshot of k; k is written after it and before the attention reads the repeat."""

    def forward(self, q, k, v):
        k = k.clone()
        kr = _recfx_repeat(k, R).transpose(1, 2)
        vr = _recfx_repeat(v, R).transpose(1, 2)
        k.mul_(2.0)
        return F.scaled_dot_product_attention(q, kr, vr), k


class WriteToRepeat(nn.Module):
    """A write to the repeated copy (not to its source): the fold would read the unwritten source."""

    def forward(self, q, k, v):
        kr = k.transpose(1, 2).repeat_interleave(R, dim=1)
        kr[:, 0] = 0.0
        vr = v.transpose(1, 2).repeat_interleave(R, dim=1)
        return F.scaled_dot_product_attention(q, kr, vr)


@pytest.mark.parametrize("model", [WrittenAfterRepeat(), WriteToRepeat()], ids=["source", "copy"])
def test_leaves_alone_a_write_in_place(graph_of, model):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, G, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, G, D, generator=g, dtype=torch.float64)
    gm = graph_of(model, q, k, v)
    want = gm(q, k, v)
    assert not fold_gqa_attention(gm).modified
    torch.testing.assert_close(gm(q, k, v), want, rtol=0, atol=0)


def test_output_keeps_the_original_layout(graph_of):
    """Where the captured attention output is laid out (B, N, H, D) in memory, the folded one is too."""
    gm = graph_of(Attn("recfx"), *_inputs())
    (sdpa,) = [n for n in gm.graph.nodes if n.target is torch.ops.aten.scaled_dot_product_attention.default]
    like = sdpa.meta["val"]
    assert not like.is_contiguous()  # SDPA writes in the query's (B, N, H, D) memory order
    fold_gqa_attention(gm)
    users = [n for n in gm.graph.nodes if n.target is torch.ops.aten.transpose.int and n.args[1:] == (1, 2)
             and "val" in n.meta and n.meta["val"].shape[1] == N]
    assert users and all(u.args[0].meta["val"].stride() == like.stride() for u in users[-1:])
