"""recfx::fp8_linear and recfx::fp8_linear_blocks: SQNR vs float64, the exact scaled formula, opcheck, compile."""

from __future__ import annotations

import pytest
import torch

import recfx  # noqa: F401  (defines the ops)
from recfx.analysis.numerics import sqnr_db
from recfx.ops import fp8_linear as linear_ops
from recfx.ops.fp8 import block_amax, expand_block_scale, quantize_weight, scale_from_amax, static_quantize
from recfx.ops.fp8_testing import opcheck_fp8, run_examples

ops = torch.ops.recfx
#: FP8 E4M3 keeps 3 mantissa bits: about 28 dB per product on Gaussian data; the spec asks for >= 25 dB.
MIN_SQNR_DB = 25.0


def _problem(m: int = 64, k: int = 256, n: int = 96, bias: bool = True) -> tuple[torch.Tensor, ...]:
    x = torch.randn(2, m // 2, k)
    w = torch.randn(n, k) / k**0.5
    b = torch.randn(n) if bias else None
    ref = x.double() @ w.double().T + (b.double() if bias else 0)
    return x, w, b, ref


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_fp8_linear_per_token_sqnr(granularity: str) -> None:
    x, w, b, ref = _problem()
    w_q, w_s = quantize_weight(w, granularity)
    y = ops.fp8_linear(x, w_q, w_s, b)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert sqnr_db(ref, y) >= MIN_SQNR_DB


def test_fp8_linear_static_scale_sqnr_and_saturation() -> None:
    x, w, b, ref = _problem()
    w_q, w_s = quantize_weight(w)
    x_scale = (x.abs().max() / 448).reshape(())
    assert sqnr_db(ref, ops.fp8_linear(x, w_q, w_s, b, x_scale)) >= MIN_SQNR_DB
    clipped = ops.fp8_linear(x, w_q, w_s, b, x_scale / 100)  # most activations saturate: the error is large
    assert sqnr_db(ref, clipped) < 10


def test_fp8_linear_equals_the_scaled_formula() -> None:
    """The op computes s_x[m] * s_w[n] * sum_k q_x q_w (+ bias) exactly up to float32 accumulation."""
    x, w, b, _ = _problem(m=8, k=64, n=16)
    w_q, w_s = quantize_weight(w)
    q, s = ops.quantize_fp8_per_token(x.reshape(-1, 64))
    exact = (q.double() @ w_q.double().T) * s.double() * w_s.double().T + b.double()
    y = ops.fp8_linear(x, w_q, w_s, b).reshape(-1, 16)
    torch.testing.assert_close(y.double(), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_fp8_linear_output_dtype(out_dtype: torch.dtype) -> None:
    x, w, b, ref = _problem()
    w_q, w_s = quantize_weight(w)
    y = ops.fp8_linear(x.to(out_dtype), w_q, w_s, b.to(out_dtype))
    assert y.dtype == out_dtype
    assert sqnr_db(ref, y) >= MIN_SQNR_DB - 1  # bf16 output rounding costs a little
    assert ops.fp8_linear(x, w_q, w_s, out_dtype=out_dtype).dtype == out_dtype


@pytest.mark.parametrize("n,k", [(256, 384), (200, 300)])
def test_fp8_linear_blocks_sqnr(n: int, k: int) -> None:
    x, w, b, ref = _problem(m=16, k=k, n=n)
    x[..., :64] *= 50  # an outlier block: block scales confine it to its own 1 x 128 group
    ref = x.double() @ w.double().T + b.double()
    w_q, w_s = quantize_weight(w, "block", 128)
    y = ops.fp8_linear_blocks(x, w_q, w_s, b, 128)
    assert y.shape == ref.shape
    assert sqnr_db(ref, y) >= MIN_SQNR_DB


def _group_weight(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight quantized in 1 x ``group`` groups along K (scale [N, ceil(K / group)])."""
    s = scale_from_amax(block_amax(w, (1, group)))
    return static_quantize(w, expand_block_scale(s, w.shape, (1, group))), s


def test_fp8_linear_blocks_takes_weight_groups() -> None:
    """A [N, ceil(K/B)] weight scale (1 x B groups) is applied per row: the op equals
    sum_kb s_x[m, kb] * s_w[n, kb] * sum_k q_x q_w (+ bias) up to float32 accumulation, and keeps the SQNR."""
    x, w, b, ref = _problem(m=16, k=200, n=48)
    w_q, w_s = _group_weight(w, 64)  # 200 = 3 full groups + a partial one
    assert list(w_s.shape) == [48, 4]
    q, s_x = ops.quantize_fp8_groups(x.reshape(-1, 200), 64)
    full = lambda s, n: expand_block_scale(s, (n, 200), (1, 64)).double()  # noqa: E731
    exact = (q.double() * full(s_x, 16)) @ (w_q.double() * full(w_s, 48)).T + b.double()
    y = ops.fp8_linear_blocks(x, w_q, w_s, b, 64)
    torch.testing.assert_close(y.reshape(-1, 48).double(), exact, rtol=1e-5, atol=1e-5)
    assert sqnr_db(ref, y) >= MIN_SQNR_DB
    w_blocks = quantize_weight(w, "block", 64)[1]  # 48 rows: one block of rows, so [1, 4]; not [48, 4]
    assert not torch.equal(ops.fp8_linear_blocks(x, w_q, w_blocks, b, 64), y)


def test_fp8_linear_bad_inputs() -> None:
    w_q, w_s = quantize_weight(torch.randn(8, 16))
    with pytest.raises(ValueError, match="disagree on K"):
        ops.fp8_linear(torch.randn(2, 15), w_q, w_s)
    with pytest.raises(TypeError, match="float8_e4m3fn"):
        ops.fp8_linear(torch.randn(2, 16), torch.randn(8, 16), w_s)
    with pytest.raises(ValueError, match="bias must be"):
        ops.fp8_linear(torch.randn(2, 16), w_q, w_s, torch.randn(7))
    with pytest.raises(ValueError, match=r"w_scale must be \[\] \(per tensor\) or \[N, 1\] = \[8, 1\]"):
        ops.fp8_linear(torch.randn(2, 16), w_q, torch.ones(7, 1))
    with pytest.raises(ValueError, match="w_scale must be"):
        ops.fp8_linear(torch.randn(2, 16), w_q, torch.ones(8))  # a 1-D scale would read as per-K in ONNX
    with pytest.raises(ValueError, match="x_scale must be a float32 per-tensor scale"):
        ops.fp8_linear(torch.randn(2, 16), w_q, w_s, None, torch.ones(2))
    wb_q, wb_s = quantize_weight(torch.randn(8, 16), "block", 4)
    with pytest.raises(ValueError, match=r"or \[N, ceil\(K/B\)\] = \[8, 2\]"):
        ops.fp8_linear_blocks(torch.randn(2, 16), wb_q, wb_s, None, 8)


def _samples() -> list[tuple]:
    w_q, w_s = quantize_weight(torch.randn(16, 32))
    wt_q, wt_s = quantize_weight(torch.randn(16, 32), "per_tensor")
    wb_q, wb_s = quantize_weight(torch.randn(24, 40), "block", 16)
    wg_q, wg_s = _group_weight(torch.randn(24, 40), 16)
    return [
        (ops.fp8_linear.default, (torch.randn(3, 5, 32), w_q, w_s), {}),
        (ops.fp8_linear.default, (torch.randn(4, 32), wt_q, wt_s, torch.randn(16), torch.tensor(0.01)), {}),
        (ops.fp8_linear.default, (torch.randn(4, 32), w_q, w_s), {"out_dtype": torch.bfloat16}),
        (ops.fp8_linear_blocks.default, (torch.randn(2, 3, 40), wb_q, wb_s, torch.randn(24), 16), {}),
        (ops.fp8_linear_blocks.default, (torch.randn(2, 3, 40), wg_q, wg_s, torch.randn(24), 16), {}),
    ]


@pytest.mark.parametrize("case", range(5))
def test_opcheck(case: int) -> None:
    op, args, kwargs = _samples()[case]
    opcheck_fp8(op, args, kwargs)


def test_inductor_compiles_around_the_op() -> None:
    """torch.compile treats the op as opaque (its fake implementation gives the shapes), with a dynamic batch."""
    w_q, w_s = quantize_weight(torch.randn(16, 32))

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(ops.fp8_linear(x * 2, w_q, w_s)) + 1

    compiled = torch.compile(f, backend="inductor", dynamic=True, fullgraph=True)
    for m in (3, 7):
        x = torch.randn(m, 32)
        torch.testing.assert_close(compiled(x), f(x))


def test_docstring_examples_run() -> None:
    run_examples([linear_ops.fp8_linear, linear_ops.fp8_linear_blocks], linear_ops)
