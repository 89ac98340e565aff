"""recfx::silu_mul_fp8 (the op, CPU formula): opcheck, its docstring example, accuracy against float64, the scale's
exactness, and its argument errors."""

from __future__ import annotations

import pytest
import torch

import recfx.ops.fp8_silu as silu_ops
from recfx.ops.fp8_rows import EAGER, row_scales
from recfx.ops.fp8_testing import opcheck_fp8, run_examples

ops = torch.ops.recfx


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_opcheck(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    opcheck_fp8(ops.silu_mul_fp8.default, (torch.randn(6, 40, dtype=dtype), torch.randn(6, 40, dtype=dtype)))


def test_docstring_examples_run() -> None:
    run_examples([silu_ops.silu_mul_fp8], silu_ops)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_matches_float64_and_its_scales_are_exact(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    scales = torch.logspace(-3, 3, 16)[:, None]  # rows of very different magnitude: one scale each
    gate, up = (torch.randn(16, 300) * 3).to(dtype), (torch.randn(16, 300) * scales).to(dtype)
    q, s = ops.silu_mul_fp8(gate, up)
    exact = torch.nn.functional.silu(gate.double()) * up.double()
    got = q.double() * s.double()
    assert q.dtype == torch.float8_e4m3fn and s.shape == (16, 1) and s.dtype == torch.float32
    sqnr = 10 * torch.log10(exact.pow(2).sum(-1) / (got - exact).pow(2).sum(-1))
    assert sqnr.min() > 28  # E4M3 per row: ~31 dB on Gaussian-like rows
    assert torch.equal(s, row_scales(EAGER, torch.nn.functional.silu(gate.float()) * up.float()))


def test_empty_rows() -> None:
    q, s = ops.silu_mul_fp8(torch.empty(0, 8), torch.empty(0, 8))
    assert q.shape == (0, 8) and s.shape == (0, 1)


def test_argument_errors_say_what_to_do() -> None:
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="of one shape"):
        ops.silu_mul_fp8(x, torch.randn(4, 9))
    with pytest.raises(ValueError, match="reshape them to rows first"):
        ops.silu_mul_fp8(x[None], x[None])
    with pytest.raises(ValueError, match="one dtype"):
        ops.silu_mul_fp8(x, x.to(torch.bfloat16))
    with pytest.raises(ValueError, match="one dtype"):
        ops.silu_mul_fp8(x.double(), x.double())
    with pytest.raises(ValueError, match="up on meta"):
        ops.silu_mul_fp8(x, torch.randn(4, 8, device="meta"))
