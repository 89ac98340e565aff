"""recfx::fp8_block_mm (the op, CPU reference): opcheck (dense and grouped), its docstring example, the group
quantization's argument check, and that it equals fp8_linear_blocks on the operands that op quantizes itself."""

from __future__ import annotations

import pytest
import torch

import recfx.ops.fp8_block_mm as block_ops
from recfx.ops.fp8 import quantize_weight
from recfx.ops.fp8_block_mm import quantize_groups
from recfx.ops.fp8_terms import EAGER
from recfx.ops.fp8_testing import opcheck_fp8, run_examples

ops = torch.ops.recfx


def _samples() -> list[tuple[tuple[object, ...], dict[str, object]]]:
    torch.manual_seed(0)
    q, s = quantize_groups(EAGER, torch.randn(6, 64), 64, 32, exact=True)
    w_q, w_s = quantize_weight(torch.randn(48, 64), "block", 32)
    stacked = [quantize_weight(torch.randn(48, 64), "block", 32) for _ in range(3)]
    e_q, e_s = torch.stack([w for w, _ in stacked]), torch.stack([s for _, s in stacked])
    offs = torch.tensor([2, 2, 6], dtype=torch.int32)
    return [((q, s, w_q, w_s, None, 32, torch.float32), {}),
            ((q, s, w_q, w_s, None, 32, torch.bfloat16), {"fast_accum": False}),
            ((q, s, e_q, e_s, offs, 32, torch.bfloat16), {})]


@pytest.mark.parametrize("case", range(3))
def test_opcheck(case: int) -> None:
    args, kwargs = _samples()[case]
    opcheck_fp8(ops.fp8_block_mm.default, args, kwargs)


def test_docstring_examples_run() -> None:
    run_examples([block_ops.fp8_block_mm], block_ops)


def test_equals_fp8_linear_blocks() -> None:
    """The op on exactly quantized groups is fp8_linear_blocks without its own quantization: the same float32 sums."""
    torch.manual_seed(1)
    x = torch.randn(5, 128)
    w_q, w_s = quantize_weight(torch.randn(40, 128), "block", 64)
    q, s = quantize_groups(EAGER, x, 128, 64, exact=True)
    assert torch.equal(ops.fp8_block_mm(q, s, w_q, w_s, None, 64, torch.float32),
                       ops.fp8_linear_blocks(x, w_q, w_s, None, 64))


def test_argument_errors_say_what_to_do() -> None:
    q, s = quantize_groups(EAGER, torch.randn(4, 64), 64, 32, exact=True)
    w_q, w_s = quantize_weight(torch.randn(32, 64), "block", 32)
    with pytest.raises(ValueError, match="block_size must be one of"):
        ops.fp8_block_mm(q, s, w_q, w_s, None, 16, torch.float32)
    with pytest.raises(ValueError, match="use recfx::quantize_fp8_groups"):
        quantize_groups(EAGER, torch.randn(4, 48), 48, 32, exact=True)
    with pytest.raises(ValueError, match="offs must be int32"):
        ops.fp8_block_mm(q, s, w_q[None], w_s[None], torch.tensor([4]), 32, torch.float32)
    with pytest.raises(ValueError, match=r"w_q and w_s must be \(N, K\)"):
        ops.fp8_block_mm(q, s, w_q[None], w_s[None], None, 32, torch.float32)
    with pytest.raises(ValueError, match="s_x must be"):
        ops.fp8_block_mm(q, s[:, :1], w_q, w_s, None, 32, torch.float32)
    with pytest.raises(ValueError, match="must be torch.float8_e4m3fn"):
        ops.fp8_block_mm(q.float(), s, w_q, w_s, None, 32, torch.float32)
    with pytest.raises(ValueError, match="offs is on meta"):
        ops.fp8_block_mm(q, s, w_q[None], w_s[None], torch.tensor([4], dtype=torch.int32, device="meta"), 32,
                         torch.float32)
