"""``fuse_ksa``: structure (op counts, parameters), spellings, negative masks, golden counts on the KSA models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

import recfx
from recfx.frontend import capture
from recfx.models import get_model
from recfx.models.common import masked_attention, repeat_kv
from recfx.models.ksa_mask import ksa_mask, text_causal_mask
from recfx.passes import CANONICAL_PASSES, PASSES, PassContext, PassManager
from recfx.passes.ksa_mask_infer import KSAParams, infer_ksa_params
from recfx.passes.ksa_pattern import VARIANTS, Variant
from recfx.passes.utils import op_histogram

KSA = "recfx.ksa_attention.default"
SOFTMAX = "aten.softmax.int"


def run_pipeline(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, str]:
    pm = PassManager([PASSES.get(n) for n in (*CANONICAL_PASSES, "fuse_ksa")], PassContext(), check_invariants=True)
    gm = pm.run(gm)
    return gm, pm.records[-1].detail


def ksa_args(gm: torch.fx.GraphModule) -> list[tuple]:
    return [tuple(n.args[3:]) for n in gm.graph.nodes if n.target is torch.ops.recfx.ksa_attention.default]


def spelled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                      variant: Variant) -> torch.Tensor:
    """Masked attention written the way ``variant`` names it (independently of the pass's pattern), scale 0.5."""
    groups = q.shape[2] // k.shape[2]
    if variant.gqa:
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
    if variant.scale == "q_mul":
        scores = (q * 0.5) @ k.transpose(-2, -1)
    elif variant.scale == "div":
        scores = q @ k.transpose(-2, -1) / 2.0
    else:
        scores = q @ k.transpose(-2, -1) * 0.5
    if variant.mask == "masked_fill":
        scores = scores.masked_fill(~allowed, float("-inf"))
    elif variant.mask == "where":
        scores = torch.where(allowed, scores, torch.finfo(scores.dtype).min)
    elif variant.mask == "where_inverted":
        scores = torch.where(~allowed, float("-inf"), scores)
    else:
        scores = scores + torch.zeros(allowed.shape, dtype=scores.dtype).masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


class MaskedAttention(torch.nn.Module):
    """q/k/v from inputs; the mask built in forward from the length by ``mask_fn``; attention spelled by ``variant``."""

    def __init__(self, mask_fn, variant: Variant = VARIANTS[0]) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.mask_fn, self.variant = mask_fn, variant

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return spelled_attention(q, k, v, self.mask_fn(q.shape[1], q.device), self.variant)


def qkv(length: int = 30, heads: int = 4, kv_heads: int = 2) -> tuple[torch.Tensor, ...]:
    return (torch.randn(2, length, heads, 8), torch.randn(2, length, kv_heads, 8), torch.randn(2, length, kv_heads, 8))


def fuse(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], dynamic_seq: bool = False):  # type: ignore[no-untyped-def]
    if dynamic_seq:
        seq = Dim("seq", min=4, max=4096)
        shapes = tuple({0: Dim("batch"), 1: seq} for _ in inputs)
        gm = capture(module.eval(), inputs, dynamic_shapes=shapes).graph_module
    else:
        gm = capture(module.eval(), inputs, dynamic_batch=False).graph_module
    return run_pipeline(gm)


def test_structure_and_numerics() -> None:
    """One KSA attention -> one op with the right (k, S, W, scale), no softmax left, same outputs."""
    module = MaskedAttention(lambda n, dev: ksa_mask(n, 4, 1, 2, dev))
    inputs = qkv()
    gm, detail = fuse(module, inputs)
    hist = op_histogram(gm)
    assert hist.get(KSA) == 1 and SOFTMAX not in hist and "aten.matmul.default" not in hist
    assert ksa_args(gm) == [(4, 1, 2, 0.5)]
    assert "1 x KSA(k=4, S=1, W=2)" in detail
    torch.testing.assert_close(gm(*inputs), module(*inputs))


@pytest.mark.parametrize("variant", [
    Variant("div", "masked_fill", True), Variant("q_mul", "where", True), Variant("mul", "where_inverted", False),
    Variant("mul", "add", True), Variant("div", "where", False),
], ids=str)
def test_spellings(variant: Variant) -> None:
    """Scale as mul/div/q-mul, mask by masked_fill/where/where-inverted/add, GQA repeat or not: all fused."""
    module = MaskedAttention(lambda n, dev: ksa_mask(n, 3, 2, 1, dev), variant)
    inputs = qkv(heads=4, kv_heads=2 if variant.gqa else 4)
    gm, _ = fuse(module, inputs)
    assert ksa_args(gm) == [(3, 2, 1, 0.5)]
    torch.testing.assert_close(gm(*inputs), module(*inputs))


def _ksa_mask_other_spelling(n: int, device: torch.device) -> torch.Tensor:
    """The same visibility as ksa_mask(n, 4, 1, 2) written differently (divisions, where, block ids by cumsum)."""
    pos = torch.arange(n, device=device)
    chunk_id = torch.div(pos, 5, rounding_mode="floor")
    summary = torch.remainder(pos, 5) == 4
    gap = chunk_id[:, None] - chunk_id[None, :]
    text_key = torch.where(summary[None, :], gap > 2, gap <= 2)
    own = (gap == 0) & ~summary[None, :] | (gap == 0) & (pos[None, :] <= pos[:, None])
    rows = torch.where(summary[:, None], own, text_key)
    return rows & (pos[None, :] <= pos[:, None])


def test_dynamic_length_other_spelling() -> None:
    """A mask computed from a dynamic length, spelled with other ops, is evaluated and recognised."""
    module = MaskedAttention(_ksa_mask_other_spelling)
    inputs = qkv(length=37)
    assert torch.equal(_ksa_mask_other_spelling(37, "cpu"), ksa_mask(37, 4, 1, 2))
    gm, _ = fuse(module, inputs, dynamic_seq=True)
    assert ksa_args(gm) == [(4, 1, 2, 0.5)]
    longer = qkv(length=58)
    torch.testing.assert_close(gm(*longer), module(*longer))


def _one_pair_off(n: int, device: torch.device) -> torch.Tensor:
    """ksa_mask(n, 4, 1, 2) without one allowed pair: the last text row no longer sees the token before it."""
    pos = torch.arange(n, device=device)
    last_text = (n - 1) - (n - 1) % 5 + min((n - 1) % 5, 3)
    return ksa_mask(n, 4, 1, 2, device) & ~((pos[:, None] == last_text) & (pos[None, :] == last_text - 1))


@pytest.mark.parametrize("mask_fn", [
    lambda n, dev: torch.ones(n, n, dtype=torch.bool, device=dev).tril(),  # causal
    lambda n, dev: text_causal_mask(n, 4, 1, dev),  # the full layers of a hybrid stack
    lambda n, dev: torch.ones(n, n, dtype=torch.bool, device=dev).tril() & ~torch.ones(n, n, dtype=torch.bool,
                                                                                      device=dev).tril(-8),  # window
    _one_pair_off,
], ids=["causal", "text_causal", "sliding_window", "ksa_one_pair_off"])
def test_other_masks_are_not_fused(mask_fn) -> None:  # type: ignore[no-untyped-def]
    module = MaskedAttention(mask_fn)
    gm, detail = fuse(module, qkv())
    assert op_histogram(gm).get(KSA, 0) == 0 and op_histogram(gm)[SOFTMAX] == 1
    assert "kept (mask is not KSA)" in detail


def test_data_dependent_mask_is_not_fused() -> None:
    class FromData(torch.nn.Module):
        def forward(self, q, k, v, keep):  # type: ignore[no-untyped-def]
            allowed = ksa_mask(q.shape[1], 4, 1, 2, q.device) & (keep[:, None] > 0)  # depends on input values
            return masked_attention(q, k, v, allowed, 0.5)

    inputs = (*qkv(), torch.ones(30))
    seq = Dim("seq", min=4, max=512)
    gm = capture(FromData().eval(), inputs, dynamic_shapes=({1: seq}, {1: seq}, {1: seq}, {0: seq})).graph_module
    gm, _ = run_pipeline(gm)
    assert op_histogram(gm).get(KSA, 0) == 0


def test_infer_window_ambiguity() -> None:
    """A short static mask fixes (k, S) exactly; any window past its chunks is equivalent (the smallest is used)."""
    found = infer_ksa_params(ksa_mask(40, 4, 1, 100))
    assert found is not None and not found.exact and found.params == KSAParams(4, 1, 7)
    found = infer_ksa_params(ksa_mask(40, 4, 1, 3))
    assert found is not None and found.exact and found.params == KSAParams(4, 1, 3)


# ------------------------------------------------------------------------------------------- golden counts
def test_golden_ksa_tiny_static_and_dynamic() -> None:
    spec = get_model("ksa-tiny")
    model = spec.build()
    tokens = spec.example_inputs(2, seq=16)
    for dynamic in (False, True):
        shapes = ({0: Dim("batch"), 1: 4 * Dim("chunks", min=2, max=4096)},) if dynamic else None
        gm = capture(model, tokens, dynamic_batch=False, dynamic_shapes=shapes).graph_module
        gm, _ = run_pipeline(gm)
        hist = op_histogram(gm)
        assert hist.get(KSA) == 3 and hist.get(SOFTMAX) == 1, hist  # layers 0-2 fused, the full layer 3 kept
        assert set(ksa_args(gm)) == {(4, 1, 2, 32**-0.5)}
        for seq in ((16, 28) if dynamic else (16,)):
            x = spec.example_inputs(2, seq=seq, seed=1)
            with torch.no_grad():
                torch.testing.assert_close(gm(*x), model(*x), rtol=1e-4, atol=1e-4)


def test_golden_ksa_1b_on_meta() -> None:
    """ksa-1b (24 layers, 3:1) captured on the meta device with a dynamic length: 18 fused, 6 full layers kept."""
    spec = get_model("ksa-1b")
    model = spec.build(device="meta")
    tokens = (torch.zeros(2, 16, dtype=torch.int64, device="meta"),)
    gm = capture(model, tokens, dynamic_shapes=({0: Dim("batch"), 1: 8 * Dim("chunks", min=2, max=8192)},))
    gm, detail = run_pipeline(gm.graph_module)
    hist = op_histogram(gm)
    assert hist.get(KSA) == 18 and hist.get(SOFTMAX) == 6, detail
    assert set(ksa_args(gm)) == {(8, 1, 128, 128**-0.5)}


def test_recfx_compile_eager_runs_the_op() -> None:
    spec = get_model("ksa-tiny")
    model = spec.build()
    compiled = recfx.compile(model, spec.example_inputs(2, seq=24), backend="eager")
    fuse_record = next(r for r in compiled.report.passes if r.name == "fuse_ksa")
    assert fuse_record.changed_nodes == 3
    assert compiled.report.numerics[0].cosine > 0.99999


def test_additive_mask_with_a_finite_minimum_is_fused() -> None:
    """An additive mask of 0 / finfo.min (a common spelling) is KSA's as much as 0 / -inf; other values are not."""

    class Additive(torch.nn.Module):
        def __init__(self, blocked: float) -> None:
            super().__init__()
            self.blocked = blocked

        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            allowed = ksa_mask(q.shape[1], 3, 2, 1, q.device)
            bias = torch.zeros(allowed.shape).masked_fill(~allowed, self.blocked)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            return (((q @ k.transpose(-2, -1)) * 0.5 + bias).softmax(-1) @ v).transpose(1, 2)

    inputs = qkv(heads=4, kv_heads=4)
    module = Additive(torch.finfo(torch.float32).min)
    gm, _ = fuse(module, inputs)
    assert ksa_args(gm) == [(3, 2, 1, 0.5)]
    torch.testing.assert_close(gm(*inputs), module(*inputs))
    gm, _ = fuse(Additive(-5.0), inputs)  # a soft penalty, not a mask
    assert op_histogram(gm).get(KSA, 0) == 0


# ------------------------------------------------------------------- SDPA, (B, H, L, D) inputs, transformers style
def hf_repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """transformers' repeat_kv: (B, Hkv, L, D) -> (B, Hkv * groups, L, D), after the transposes."""
    b, h, n, d = x.shape
    return x[:, :, None, :, :].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


class SDPAAttention(torch.nn.Module):
    """Attention written as transformers and SDPA users write it: transposes to (B, H, L, D) first, then SDPA."""

    def __init__(self, mask_fn, form: str, scale: float | None = None, batch_mask: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.mask_fn, self.form, self.scale, self.batch_mask = mask_fn, form, scale, batch_mask

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n = q.shape[:2]
        allowed = self.mask_fn(n, q.device)  # (L, L) bool, True = may attend
        mask: torch.Tensor = allowed
        if self.form == "additive":
            mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        if self.batch_mask:
            mask = mask[None, None].expand(b, 1, n, n)  # (B, 1, L, L), as transformers builds it
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
        groups = q.shape[1] // k.shape[1]
        if self.form == "repeat":
            k, v = hf_repeat_kv(k, groups), hf_repeat_kv(v, groups)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale,
                                             enable_gqa=self.form != "repeat" and groups > 1)
        return out.transpose(1, 2)  # (B, L, H, D)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("form,scale,batch_mask,kv_heads", [
    ("bool", None, False, 2), ("bool", 0.3, True, 4), ("additive", None, True, 2), ("additive", 0.3, False, 4),
    ("repeat", None, False, 2), ("repeat", 0.3, True, 1),
], ids=["bool-gqa", "bool-scale-batchmask", "additive-gqa-batchmask", "additive-scale", "repeat", "repeat-scale"])
def test_sdpa_spellings(form: str, scale: float | None, batch_mask: bool, kv_heads: int, dynamic: bool) -> None:
    """SDPA with a bool or additive mask, enable_gqa or transformers' repeat_kv, a scale argument or SDPA's default,
    an (L, L) or batch-expanded mask: fused with SDPA's scale, every transpose cancelled, outputs unchanged."""
    module = SDPAAttention(lambda n, dev: ksa_mask(n, 3, 2, 1, dev), form, scale, batch_mask)
    inputs = qkv(heads=4, kv_heads=kv_heads)
    gm, detail = fuse(module, inputs, dynamic_seq=dynamic)
    hist = op_histogram(gm)
    assert ksa_args(gm) == [(3, 2, 1, scale if scale is not None else 1 / math.sqrt(8))], detail
    assert "aten.scaled_dot_product_attention.default" not in hist and "aten.transpose.int" not in hist, hist
    assert "aten.expand.default" not in hist  # k/v reach the op with their kv heads, not repeated
    torch.testing.assert_close(gm(*inputs), module(*inputs))
    if dynamic:
        longer = qkv(length=47, heads=4, kv_heads=kv_heads)
        torch.testing.assert_close(gm(*longer), module(*longer))


@pytest.mark.parametrize("mask_fn", [
    lambda n, dev: torch.ones(n, n, dtype=torch.bool, device=dev).tril(),
    lambda n, dev: text_causal_mask(n, 4, 1, dev),
    _one_pair_off,
], ids=["causal", "text_causal", "ksa_one_pair_off"])
def test_sdpa_other_masks_are_not_fused(mask_fn) -> None:  # type: ignore[no-untyped-def]
    gm, detail = fuse(SDPAAttention(mask_fn, "bool"), qkv())
    assert op_histogram(gm).get(KSA, 0) == 0 and op_histogram(gm)["aten.scaled_dot_product_attention.default"] == 1
    assert "kept (mask is not KSA)" in detail


def test_sdpa_without_mask_dropout_or_per_batch_mask_is_not_fused() -> None:
    """is_causal without a mask, dropout_p > 0, a mask that differs per batch row: none of them is one KSA mask."""

    class Variants(torch.nn.Module):
        def forward(self, q, k, v, rows):  # type: ignore[no-untyped-def]
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            allowed = ksa_mask(q.shape[2], 4, 1, 2, q.device)
            causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            dropped = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=0.5)
            per_row = allowed[None, None] & (rows[:, None, None, None] > 0)  # (B, 1, L, L), reads input values
            return causal + dropped + F.scaled_dot_product_attention(q, k, v, attn_mask=per_row)

    q, k, v = qkv(kv_heads=4)
    gm, _ = fuse(Variants(), (q, k, v, torch.ones(2)))
    assert op_histogram(gm).get(KSA, 0) == 0 and op_histogram(gm)["aten.scaled_dot_product_attention.default"] == 3


def _summaries_after_partial_chunk(n: int, device: torch.device) -> torch.Tensor:
    """KSA's visibility (k=4, S=1, W=2) in the other layout convention: the last, partial chunk is followed by its
    summary too (as the official KSA batch builder lays it out), so the sequence ends in a summary."""
    block, chunk = 5, 4
    full, rest = divmod(n, block)
    chunk_id = torch.arange(n, device=device) // block
    summary = torch.arange(n, device=device) % block == chunk
    if rest:  # the last `rest` positions: rest - 1 text tokens, then the summary
        summary[-1] = True
    gap = chunk_id[:, None] - chunk_id[None, :]
    pos = torch.arange(n, device=device)
    text_query = torch.where(summary[None, :], gap > 2, gap <= 2)
    return torch.where(summary[:, None], gap == 0, text_query) & (pos[None, :] <= pos[:, None])


@pytest.mark.parametrize("length,fused", [(30, True), (28, False)], ids=["whole_blocks", "partial_chunk"])
def test_other_partial_chunk_convention_is_never_misfused(length: int, fused: bool) -> None:
    """Whole blocks: both conventions are one mask, fused. A partial last chunk followed by a summary is not
    recfx's layout (docs/ksa.md): the evaluated mask differs from ksa_mask, so the attention is kept."""
    module = SDPAAttention(_summaries_after_partial_chunk, "bool")
    inputs = qkv(length=length, kv_heads=4)
    gm, _ = fuse(module, inputs)
    assert (op_histogram(gm).get(KSA, 0) == 1) == fused
    torch.testing.assert_close(gm(*inputs), module(*inputs))
