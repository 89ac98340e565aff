"""The block-scaled FP8 GEMM kernel (TRITON_INTERPRET=1 on the CPU) against ``recfx::fp8_block_mm``'s reference
(dense and grouped by expert, B x B blocks and 1 x B weight groups, ragged tiles), its argument errors, and its
sm_90 build (no spills)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from recfx.ops.fp8 import block_amax, quantize_weight, scale_from_amax
from recfx.ops.fp8_block_mm import quantize_groups
from recfx.ops.fp8_linear import weight_block_rows
from recfx.ops.fp8_terms import EAGER

triton = pytest.importorskip("triton")
from recfx.kernels.fp8_block_gemm import SM90_SHAPES, fp8_block_gemm_kernel  # noqa: E402  (after the Triton check)

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")
ops = torch.ops.recfx


def _weight(n: int, k: int, block: int, groups: bool) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(n, k) * torch.rand(n, 1) * 4  # rows of different magnitude: the scales matter
    if not groups:
        return quantize_weight(w, "block", block)
    s = scale_from_amax(block_amax(w, (1, block)))  # (N, ceil(K/B))
    return (w / s.repeat_interleave(block, 1)[:, :k]).clamp(-448, 448).to(torch.float8_e4m3fn), s


def _run(q: torch.Tensor, s: torch.Tensor, w_q: torch.Tensor, w_s: torch.Tensor, offs: torch.Tensor | None,
         block: int, dtype: torch.dtype) -> torch.Tensor:
    n = w_q.shape[-2]
    out = torch.full((q.shape[0], n), float("nan"), dtype=dtype)
    return fp8_block_gemm_kernel(q, s, w_q, w_s, offs, block, weight_block_rows(n, w_s.shape[-2], block), out)


@pytest.mark.parametrize(("m", "n", "k", "block", "groups", "dtype"), [
    (37, 70, 96, 32, False, torch.float32),  # ragged row and column tiles, N not a multiple of the block
    (16, 32, 80, 32, True, torch.float32),  # K not a multiple of the block: a partial last K block
    (5, 48, 128, 64, False, torch.float16),
])
def test_dense_kernel_matches_the_reference(m: int, n: int, k: int, block: int, groups: bool,
                                            dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    w_q, w_s = _weight(n, k, block, groups)
    q, s = ops.quantize_fp8_groups(torch.randn(m, k), block)
    want = ops.fp8_block_mm(q, s, w_q, w_s, None, block, dtype)
    got = _run(q, s, w_q, w_s, None, block, dtype)
    # the interpreter's products are exact float32 like the reference's: the same sums block by block
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    exact = (q.double() * s.double().repeat_interleave(block, 1)[:, :k]) @ (
        w_q.double() * w_s.double().repeat_interleave(weight_block_rows(n, w_s.shape[0], block), 0)[:n]
        .repeat_interleave(block, 1)[:, :k]).T
    torch.testing.assert_close(got.double(), exact, rtol=1e-2, atol=1e-2)


def test_grouped_kernel_runs_every_expert_in_one_launch() -> None:
    """Rows sorted by expert; an expert with no rows, one with fewer rows than a tile, one spanning several tiles."""
    torch.manual_seed(1)
    block, e, n, k = 32, 4, 48, 64
    weights = [_weight(n, k, block, groups=False) for _ in range(e)]
    w_q, w_s = torch.stack([w for w, _ in weights]), torch.stack([s for _, s in weights])
    offs = torch.tensor([3, 3, 40, 45], dtype=torch.int32)
    q, s = quantize_groups(EAGER, torch.randn(45, k), k, block, True)
    want = ops.fp8_block_mm(q, s, w_q, w_s, offs, block, torch.float32)
    got = _run(q, s, w_q, w_s, offs, block, torch.float32)
    assert not got.isnan().any()  # every row written
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    start = 0
    for i, end in enumerate(offs.tolist()):  # each expert's rows by its own dense GEMM
        torch.testing.assert_close(got[start:end], ops.fp8_block_mm(q[start:end], s[start:end], w_q[i], w_s[i],
                                                                     None, block, torch.float32))
        start = end


def test_grouped_kernel_with_weight_groups_and_a_partial_k_block() -> None:
    torch.manual_seed(2)
    block, e, n, k = 32, 3, 40, 80  # K = 2.5 blocks; 1 x B weight groups: a scale per weight row
    weights = [_weight(n, k, block, groups=True) for _ in range(e)]
    w_q, w_s = torch.stack([w for w, _ in weights]), torch.stack([s for _, s in weights])
    offs = torch.tensor([0, 17, 30], dtype=torch.int32)
    q, s = ops.quantize_fp8_groups(torch.randn(30, k), block)
    got = _run(q, s, w_q, w_s, offs, block, torch.float32)
    torch.testing.assert_close(got, ops.fp8_block_mm(q, s, w_q, w_s, offs, block, torch.float32), rtol=1e-6,
                               atol=1e-5)


def test_bf16_output_within_one_rounding() -> None:
    """bf16, the models' dtype: the interpreter truncates float32 -> bf16 where the GPU and the reference round to
    nearest, so the two differ by at most one bf16 step."""
    torch.manual_seed(3)
    w_q, w_s = _weight(48, 64, 32, groups=False)
    q, s = ops.quantize_fp8_groups(torch.randn(24, 64), 32)
    got = _run(q, s, w_q, w_s, None, 32, torch.bfloat16).float()
    want = ops.fp8_block_mm(q, s, w_q, w_s, None, 32, torch.bfloat16).float()
    assert ((got - want).abs() <= want.abs() * 2.0**-7 + 1e-30).all()


def test_rows_past_m_are_never_written() -> None:
    """Group ends beyond M (a caller's mistake): the kernel stays inside the M rows of ``out``."""
    block, n, k = 32, 32, 64
    w_q, w_s = _weight(n, k, block, groups=False)
    q, s = ops.quantize_fp8_groups(torch.randn(12, k), block)
    buffer = torch.full((20, n), 7.0)
    offs = torch.tensor([6, 20], dtype=torch.int32)
    fp8_block_gemm_kernel(q, s, torch.stack([w_q, w_q]), torch.stack([w_s, w_s]), offs, block, block, buffer[:12])
    assert (buffer[12:] == 7.0).all()
    torch.testing.assert_close(buffer[:12], ops.fp8_block_mm(q, s, w_q, w_s, None, block, torch.float32), rtol=1e-6,
                               atol=1e-5)


def test_precise_accumulation_runs() -> None:
    """``fast_accum=False`` (a promotion every 32 elements on sm_90) computes the same function."""
    w_q, w_s = _weight(32, 64, 32, groups=False)
    q, s = ops.quantize_fp8_groups(torch.randn(8, 64), 32)
    out = torch.empty(8, 32)
    got = fp8_block_gemm_kernel(q, s, w_q, w_s, None, 32, 32, out, fast_accum=False)
    torch.testing.assert_close(got, ops.fp8_block_mm(q, s, w_q, w_s, None, 32, torch.float32), rtol=1e-6, atol=1e-5)


def test_kernel_builds_for_sm90_without_spills() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "recfx.kernels.resources", "--fp8-block-gemm"],
                            capture_output=True, text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"(True|False)\s+\d+", line)]
    assert len(rows) == 2 * len(SM90_SHAPES)  # dense and grouped, every autotuned config
    for row in rows:
        registers, stack, shared = (int(x) for x in row.split("|")[1].split())
        assert 0 < registers <= 255 and stack == 0 and 0 < shared <= 227 * 1024


def test_fast_accum_off_promotes_every_32_elements_on_sm90() -> None:
    """``fast_accum=False`` reaches the sm_90 MMA: the build without it accumulates without promotion (Triton's sm_90
    default), the one with it promotes to float32 every 32 elements."""
    script = '''
import re, triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from recfx.kernels import fp8_block_gemm, resources
kernel = fp8_block_gemm._fp8_block_gemm_body
for imprecise in (None, fp8_block_gemm.PRECISE_ACC):
    constexprs = {"W_ROWS": 128, "GROUPED": False, "IMPRECISE": imprecise, "BLOCK_M": 64, "BLOCK_N": 64,
                  "BLOCK_K": 128, "sa_k": 1, "sw_k": 1, "sc_n": 1}
    pointers = {"A": "*fp8e4nv", "AS": "*fp32", "W": "*fp8e4nv", "WS": "*fp32", "C": "*bf16", "OFFS": "*i32"}
    signature, indexed = resources._signature(kernel, constexprs, {}, pointers)
    built = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=indexed),
                           target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 2})
    print(sorted(set(re.findall(r"maxNumImpreciseAcc = (\\d+)", built.asm["ttgir"]))))
'''
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["['1073741824']", "['32']"], result.stdout
