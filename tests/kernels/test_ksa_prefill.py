"""The Triton prefill kernel against the float64 reference (TRITON_INTERPRET=1 on the CPU, tiny shapes).

Interpreter runs use fp16 and fp32: Triton's interpreter mis-computes ``tl.dot`` on bf16 operands (seen with
triton 3.9), so bf16 is checked on the GPU (``bench/ksa.py``). Sizes cross tile (16), chunk and window boundaries.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from recfx.kernels.ksa_prefill import ksa_prefill, reference

#: |out - ref| bound for fp16 outputs of magnitude ~1 (fp16 rounding of p and of the output: ~1e-3)
FP16_OUT_ATOL = 3e-3
#: the log-sum-exp accumulates in float32 over exact fp16 products
LSE_ATOL = 1e-4


def _run(length: int, chunk: int, summaries: int, window: int, heads: int, groups: int, head_dim: int,
         dtype: torch.dtype, batch: int = 1) -> tuple[float, float]:
    q = torch.randn(batch, length, heads, head_dim).to(dtype)
    k, v = (torch.randn(batch, length, heads // groups, head_dim).to(dtype) for _ in range(2))
    out, lse = ksa_prefill(q, k, v, chunk, summaries, window, head_dim**-0.5)
    ref_out, ref_lse = reference(q.double(), k.double(), v.double(), chunk, summaries, window, head_dim**-0.5)
    assert out.shape == q.shape and lse.shape == (batch, heads, length)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    return (out.double() - ref_out).abs().max().item(), (lse.double() - ref_lse).abs().max().item()


@pytest.mark.parametrize("summaries", [1, 2])
@pytest.mark.parametrize("window", [0, 1, 3])
@pytest.mark.parametrize("groups", [1, 4])
def test_prefill_matches_reference(summaries: int, window: int, groups: int) -> None:
    chunk = 4 if summaries == 1 else 3
    length = 47 if summaries == 1 else 53  # several 16-row tiles, a trailing incomplete chunk
    out_err, lse_err = _run(length, chunk, summaries, window, heads=4, groups=groups, head_dim=16,
                            dtype=torch.float16)
    assert out_err < FP16_OUT_ATOL
    assert lse_err < LSE_ATOL


@pytest.mark.parametrize("length", [1, 5, 23, 40])
def test_prefill_edge_lengths(length: int) -> None:
    """One token; exactly one block; a length that ends inside a chunk's summary slots (23 = 3 x 6 + 5)."""
    out_err, lse_err = _run(length, chunk=4, summaries=2, window=1, heads=2, groups=1, head_dim=16,
                            dtype=torch.float16, batch=2)
    assert out_err < FP16_OUT_ATOL and lse_err < LSE_ATOL


def test_prefill_fp32_and_odd_head_dim() -> None:
    """fp32 inputs (tf32-free interpreter: exact to ~1e-6) with a head dim that is not a power of two."""
    out_err, lse_err = _run(38, chunk=2, summaries=1, window=2, heads=2, groups=2, head_dim=24, dtype=torch.float32)
    assert out_err < 1e-5 and lse_err < 1e-5


def test_prefill_rejects_bad_input() -> None:
    q = torch.randn(1, 8, 2, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="bf16/fp16/fp32"):
        ksa_prefill(q, q, q, 4, 1, 1, 0.25)
    q = torch.randn(1, 8, 4, 16, dtype=torch.float16)
    with pytest.raises(ValueError, match="multiple of Hkv"):
        ksa_prefill(q, q[:, :, :3], q[:, :, :3], 4, 1, 1, 0.25)
    with pytest.raises(ValueError, match="same shape"):
        ksa_prefill(q, q[:, :, :2], q[:, :, :1], 4, 1, 1, 0.25)


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_LOOPS": True},
    {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_LOOPS": False},
    {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_LOOPS": False},
])
def test_prefill_loop_structures_and_tiles(config: dict[str, int]) -> None:
    """Every autotuned variant computes the same function: split or merged loops, tiles wider than a chunk."""
    q = torch.randn(1, 61, 4, 16).half()
    k, v = (torch.randn(1, 61, 2, 16).half() for _ in range(2))
    out, lse = ksa_prefill(q, k, v, 4, 2, 1, 0.25, config=config)
    ref_out, ref_lse = reference(q.double(), k.double(), v.double(), 4, 2, 1, 0.25)
    assert (out.double() - ref_out).abs().max() < FP16_OUT_ATOL
    assert (lse.double() - ref_lse).abs().max() < LSE_ATOL


@pytest.mark.parametrize("summaries,window", [(1, 0), (2, 1), (1, 3)])
@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_LOOPS": False},  # square: the diagonal tile serves the summary rows
    {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_LOOPS": False},  # TMA tiles, summary rows in their own loop
])
def test_prefill_tma_and_pointer_loads_agree(summaries: int, window: int, config: dict[str, int]) -> None:
    """The TMA path (whole-chunk descriptors, rank 4 and 5) and the pointer-gather path both match float64."""
    from recfx.kernels.ksa_tma import tma_supported

    q = torch.randn(2, 150, 4, 16).half()
    k, v = (torch.randn(2, 150, 2, 16).half() for _ in range(2))
    assert tma_supported(k, 4, summaries)
    ref_out, ref_lse = reference(q.double(), k.double(), v.double(), 4, summaries, window, 0.25)
    for tma in (True, False):
        out, lse = ksa_prefill(q, k, v, 4, summaries, window, 0.25, config=config, tma=tma)
        assert (out.double() - ref_out).abs().max() < FP16_OUT_ATOL, f"tma={tma}"
        assert (lse.double() - ref_lse).abs().max() < LSE_ATOL, f"tma={tma}"


def test_tma_supported_conditions() -> None:
    from recfx.kernels.ksa_tma import tma_supported

    x = torch.randn(1, 40, 2, 16).half()
    assert tma_supported(x, 4, 1)
    assert not tma_supported(x, 3, 1)  # TMA boxes are powers of two: whole chunks of 3 rows do not tile
    assert not tma_supported(x, 4, 3)
    assert not tma_supported(x.float(), 4, 1)  # 16-bit elements only
    assert not tma_supported(torch.randn(1, 40, 2, 24).half(), 4, 1)  # head dim not a power of two
    assert not tma_supported(x[:, :3], 4, 1)  # no complete block
    assert not tma_supported(x[:, :, :1].expand_as(x), 4, 1)  # a broadcast head: a zero stride has no TMA view
    with pytest.raises(ValueError, match="TMA"):
        ksa_prefill(x, x, x, 3, 1, 1, 0.25, tma=True)
