"""The Triton decode kernel (split-K over one cache slice) vs float64 (TRITON_INTERPRET=1 on the CPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from recfx.kernels.ksa_decode import decode_attention, reference

FP16_ATOL = 2e-3


@pytest.mark.parametrize(("batch", "heads", "kv_heads", "keys", "head_dim", "splits"), [
    (1, 4, 4, 1, 16, None),  # one key
    (2, 4, 1, 77, 16, None),  # GQA 4, keys not a multiple of the tile
    (1, 8, 2, 300, 32, 3),  # splits rounded to 4; some splits shorter
    (2, 2, 2, 130, 24, 8),  # head dim not a power of two; an empty split
])
def test_decode_matches_reference(batch: int, heads: int, kv_heads: int, keys: int, head_dim: int,
                                  splits: int | None) -> None:
    buf = torch.randn(2, batch, keys + 9, kv_heads, head_dim).half()
    k, v = buf[0, :, 5:5 + keys], buf[1, :, 5:5 + keys]  # a strided slice of a cache buffer, like the KSA cache's
    q = torch.randn(batch, heads, head_dim).half()
    out = decode_attention(q, k, v, head_dim**-0.5, splits)
    ref = reference(q.double(), k.double(), v.double(), head_dim**-0.5)
    assert out.shape == (batch, heads, head_dim) and torch.isfinite(out).all()
    assert (out.double() - ref).abs().max() < FP16_ATOL


def test_decode_rejects_bad_shapes() -> None:
    q = torch.randn(1, 3, 16).half()
    kv = torch.randn(1, 10, 2, 16).half()
    with pytest.raises(ValueError, match="multiple of Hkv"):
        decode_attention(q, kv, kv, 0.25)
    with pytest.raises(ValueError, match="at least one key"):
        decode_attention(torch.randn(1, 2, 16).half(), kv[:, :0], kv[:, :0], 0.25)


def test_decode_wide_offsets() -> None:
    """64-bit key offsets (taken automatically past 2**31 elements per slice) compute the same attention."""
    from recfx.kernels.ksa_decode import needs_wide_offsets

    k, v = (torch.randn(2, 90, 2, 16).half() for _ in range(2))
    q = torch.randn(2, 4, 16).half()
    ref = reference(q.double(), k.double(), v.double(), 0.25)
    assert (decode_attention(q, k, v, 0.25, wide=True).double() - ref).abs().max() < FP16_ATOL
    assert not needs_wide_offsets(90, k, v)
    # a 1M-token full cache of 16 kv heads x 128 (k and v stacked per row): 2**32 elements of offsets
    huge = torch.empty_strided((1, 2**20, 16, 128), (0, 2 * 16 * 128, 128, 1), dtype=torch.half, device="meta")
    assert needs_wide_offsets(2**20, huge)
