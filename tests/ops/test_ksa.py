"""``recfx::ksa_attention``: schema/fake/dispatch via opcheck, and equality with the model's masked attention."""

from __future__ import annotations

import doctest

import pytest
import torch

import recfx.ops.ksa as ksa_op
from recfx.models.common import masked_attention
from recfx.models.ksa_mask import ksa_mask

OP = torch.ops.recfx.ksa_attention.default


def _qkv(length: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float64, batch: int = 2):
    q = torch.randn(batch, length, heads, head_dim, dtype=dtype)
    k = torch.randn(batch, length, kv_heads, head_dim, dtype=dtype)
    v = torch.randn(batch, length, kv_heads, head_dim, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize(("chunk", "summaries", "window", "kv_heads"), [(4, 1, 2, 2), (3, 2, 0, 4), (2, 1, 5, 1)])
def test_op_equals_model_attention(chunk: int, summaries: int, window: int, kv_heads: int) -> None:
    q, k, v = _qkv(29, 4, kv_heads, 8)
    scale = 8**-0.5
    out, lse = OP(q, k, v, chunk, summaries, window, scale)
    want = masked_attention(q, k, v, ksa_mask(29, chunk, summaries, window), scale)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    assert lse.dtype == torch.float64 and lse.shape == (2, 4, 29)
    # the log-sum-exp is the softmax normaliser: exp(score - lse) over visible keys sums to 1 per row
    scores = (q.transpose(1, 2) @ k.repeat_interleave(4 // kv_heads, 2).permute(0, 2, 3, 1)) * scale
    scores = scores.masked_fill(~ksa_mask(29, chunk, summaries, window), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype: torch.dtype) -> None:
    q, k, v = _qkv(13, 4, 2, 8, dtype=dtype)
    torch.library.opcheck(OP, (q, k, v, 4, 1, 1, 0.35))


def test_half_precision_reference_accumulates_in_float32() -> None:
    q, k, v = _qkv(21, 2, 2, 16, dtype=torch.bfloat16)
    out, lse = OP(q, k, v, 4, 1, 1, 0.25)
    ref_out, _ = OP(q.double(), k.double(), v.double(), 4, 1, 1, 0.25)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert (out.double() - ref_out).abs().max() < 1e-2  # bf16 output rounding only


@pytest.mark.parametrize(("args", "message"), [
    ((0, 1, 1), "chunk_size >= 1"),
    ((4, 0, 1), "summaries >= 1"),
    ((4, 1, -1), "window >= 0"),
])
def test_bad_parameters(args: tuple[int, int, int], message: str) -> None:
    q, k, v = _qkv(8, 2, 1, 8)
    with pytest.raises(ValueError, match=message):
        OP(q, k, v, *args, 0.3)


def test_bad_shapes() -> None:
    q, k, v = _qkv(8, 3, 2, 8)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        OP(q, k, v, 4, 1, 1, 0.3)
    q, k, v = _qkv(8, 2, 1, 8)
    with pytest.raises(ValueError, match="one floating dtype"):
        OP(q.float(), k, v, 4, 1, 1, 0.3)
    with pytest.raises(ValueError, match="ranks"):
        OP(q[0], k, v, 4, 1, 1, 0.3)
    with pytest.raises(ValueError, match="length of q 8 != length of k/v 9"):
        OP(q, *_qkv(9, 2, 1, 8)[1:], 4, 1, 1, 0.3)
    with pytest.raises(ValueError, match="head dim"):
        OP(q, *_qkv(8, 2, 1, 16)[1:], 4, 1, 1, 0.3)
    with pytest.raises(ValueError, match="batch"):
        OP(q[:1], k, v, 4, 1, 1, 0.3)


def test_fake_shapes_under_export() -> None:
    """The fake implementation propagates symbolic lengths (the op survives torch.export with a dynamic length)."""

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):  # type: ignore[no-untyped-def]
            return OP(q, k, v, 4, 1, 2, 0.3)[0]

    q, k, v = _qkv(20, 4, 2, 8, dtype=torch.float32)
    seq = torch.export.Dim("seq", min=2, max=1000)
    ep = torch.export.export(Attn(), (q, k, v), dynamic_shapes=({1: seq}, {1: seq}, {1: seq}), strict=False)
    q2, k2, v2 = _qkv(33, 4, 2, 8, dtype=torch.float32)
    torch.testing.assert_close(ep.module()(q2, k2, v2), OP(q2, k2, v2, 4, 1, 2, 0.3)[0])


def test_docstring_example() -> None:
    assert doctest.testmod(ksa_op, raise_on_error=True).failed == 0
