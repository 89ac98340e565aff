"""``recfx::fp8_block_mm``: the FP8 GEMM of block-scaled linears on already quantized operands, dense or grouped.

``recfx::fp8_linear_blocks`` is the readable reference: it quantizes its input inside, so nothing around it fuses.
``cuda-fp8`` splits it (``fp8_lower_scaled_mm``) into the activation's 1 x B group quantization, spelt in aten ops
that Inductor fuses into the producer (:func:`quantize_groups`), and this op, which runs the Triton kernel of
``recfx.kernels.fp8_block_gemm`` on CUDA. With ``offs`` it is the grouped GEMM of routed MoE experts
(``route_moe_experts_fp8``): every expert in one launch, with the 1 x 128 / 128 x 128 scales of the
``QuantConfig.onerec_v2()`` recipe.

On other devices the op computes the reference's formula (``recfx.ops.fp8_linear.blocks_matmul``): one float32
product per K block, scaled and added in block order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recfx.ops.fp8 import FP8_DTYPE
from recfx.ops.fp8_linear import blocks_matmul, weight_block_rows
from recfx.ops.fp8_rows import quantize_per_token
from recfx.ops.fp8_terms import BLOCK_SIZES, Call

aten = torch.ops.aten
#: output dtypes the op writes
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def quantize_groups(call: Call, x2: Any, k: int, block_size: int, exact: bool) -> tuple[Any, Any]:
    """Rows ``x2`` (M, K) -> (E4M3 (M, K), float32 scales (M, K / B)) in 1 x B groups, as aten ops Inductor fuses:
    each group is a row of ``x2.reshape(-1, B)``, quantized per token (``recfx.ops.fp8_rows``).

    Raises:
        ValueError: K is not a multiple of B (a group would span two rows).
    """
    if k % block_size:
        raise ValueError(f"quantize_groups: K={k} is not a multiple of the group size {block_size}; use "
                         "recfx::quantize_fp8_groups, whose last group may be shorter")
    groups = call(aten.reshape.default, x2, [-1, block_size])
    q, s = quantize_per_token(call, groups, exact=exact)
    return call(aten.reshape.default, q, [-1, k]), call(aten.reshape.default, s, [-1, k // block_size])


def _check(q_x: Tensor, s_x: Tensor, w_q: Tensor, w_s: Tensor, offs: Tensor | None, block_size: int,
           out_dtype: torch.dtype, fast_accum: bool = True) -> None:
    name = "recfx::fp8_block_mm"
    if q_x.dtype != FP8_DTYPE or w_q.dtype != FP8_DTYPE:
        raise ValueError(f"{name}: q_x and w_q must be {FP8_DTYPE} (quantize_groups / quantize_weight make them), "
                         f"got {q_x.dtype} and {w_q.dtype}")
    if s_x.dtype != torch.float32 or w_s.dtype != torch.float32:
        raise ValueError(f"{name}: s_x and w_s must be float32, got {s_x.dtype} and {w_s.dtype}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"{name}: out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"{name}: block_size must be one of {BLOCK_SIZES} (its GPU kernel's), got {block_size}; "
                         "other blocks run as recfx::fp8_linear_blocks")
    tensors = {"s_x": s_x, "w_q": w_q, "w_s": w_s, **({"offs": offs} if offs is not None else {})}
    for arg, t in tensors.items():
        if t.device != q_x.device:
            raise ValueError(f"{name}: {arg} is on {t.device}, q_x on {q_x.device}; move them to one device")
    if q_x.dim() != 2:
        raise ValueError(f"{name}: q_x must be (M, K), got shape {tuple(q_x.shape)}")
    m, k = q_x.shape
    kb = -(-k // block_size)
    if tuple(s_x.shape) != (m, kb):
        raise ValueError(f"{name}: s_x must be (M, ceil(K/B)) = {(m, kb)}, got {tuple(s_x.shape)}")
    grouped = offs is not None
    if w_q.dim() != (3 if grouped else 2) or w_s.dim() != w_q.dim():
        raise ValueError(f"{name}: w_q and w_s must be {'(E, N, K) and (E, rows, ceil(K/B)) with offs' if grouped else '(N, K) and (rows, ceil(K/B)) without offs'}, "  # noqa: E501
                         f"got shapes {tuple(w_q.shape)} and {tuple(w_s.shape)}")
    n = w_q.shape[-2]
    if w_q.shape[-1] != k:
        raise ValueError(f"{name}: w_q's K ({w_q.shape[-1]}) differs from q_x's ({k})")
    if list(w_s.shape[-2:]) not in ([-(-n // block_size), kb], [n, kb]):
        raise ValueError(f"{name}: w_s must end in [ceil(N/B), ceil(K/B)] = {[-(-n // block_size), kb]} (B x B "
                         f"blocks) or [N, ceil(K/B)] = {[n, kb]} (1 x B groups), got {list(w_s.shape)}")
    if grouped:
        assert offs is not None
        if offs.dtype != torch.int32 or tuple(offs.shape) != (w_q.shape[0],) or w_s.shape[0] != w_q.shape[0]:
            raise ValueError(f"{name}: offs must be int32 (E,) = ({w_q.shape[0]},) with w_s for the same experts, "
                             f"got {offs.dtype} {tuple(offs.shape)} and w_s {tuple(w_s.shape)}")


@torch.library.custom_op("recfx::fp8_block_mm", mutates_args=())
def fp8_block_mm(q_x: Tensor, s_x: Tensor, w_q: Tensor, w_s: Tensor, offs: Tensor | None, block_size: int,
                 out_dtype: torch.dtype, fast_accum: bool = True) -> Tensor:
    """``recfx::fp8_block_mm(Tensor q_x, Tensor s_x, Tensor w_q, Tensor w_s, Tensor? offs, SymInt block_size,
    ScalarType out_dtype, bool fast_accum=True) -> Tensor``: block-scaled FP8 GEMM,
    ``out[m, n] = sum_kb (q_x[m, kb] . w_q[n, kb]) * s_x[m, kb] * s_w[n // R, kb]`` (R = B for B x B weight blocks,
    1 for 1 x B groups).

    Args:
        q_x, s_x: E4M3 activations (M, K) and their float32 1 x B group scales (M, ceil(K/B)).
        w_q, w_s: E4M3 weight (N, K) and float32 scales (ceil(N/B), ceil(K/B)) or (N, ceil(K/B)); grouped: the
            experts' stacked, (E, N, K) and (E, ...).
        offs: None (dense), or int32 (E,): where each expert's rows end (rows sorted by expert; non-decreasing,
            at most M). Rows from ``offs[-1]`` on are not written (as ``torch._grouped_mm``).
        block_size: B, one of ``recfx.ops.fp8_terms.BLOCK_SIZES``.
        out_dtype: bf16, fp16 or fp32.
        fast_accum: on the GPU, let the FP8 MMA accumulate each K block in Hopper's fast mode (False: promote to
            float32 every 32 elements); the blocks are added in float32 either way. The CPU computes in float32.

    Returns:
        (M, N) in ``out_dtype``.

    Example:
        >>> import torch, recfx
        >>> from recfx.ops.fp8 import quantize_weight
        >>> from recfx.ops.fp8_block_mm import quantize_groups
        >>> from recfx.ops.fp8_terms import EAGER
        >>> w_q, w_s = quantize_weight(torch.randn(64, 256), "block", 128)
        >>> q, s = quantize_groups(EAGER, torch.randn(3, 256), 256, 128, exact=True)
        >>> torch.ops.recfx.fp8_block_mm(q, s, w_q, w_s, None, 128, torch.float32).shape
        torch.Size([3, 64])
    """
    _check(q_x, s_x, w_q, w_s, offs, block_size, out_dtype)
    if offs is None:
        return blocks_matmul(q_x, s_x, w_q, w_s, block_size).to(out_dtype)
    out = q_x.new_empty((q_x.shape[0], w_q.shape[1]), dtype=out_dtype)
    start = 0
    for e, end in enumerate(offs.tolist()):
        out[start:end] = blocks_matmul(q_x[start:end], s_x[start:end], w_q[e], w_s[e], block_size).to(out_dtype)
        start = end
    return out


@fp8_block_mm.register_fake
def _fp8_block_mm_fake(q_x: Tensor, s_x: Tensor, w_q: Tensor, w_s: Tensor, offs: Tensor | None, block_size: int,
                       out_dtype: torch.dtype, fast_accum: bool = True) -> Tensor:
    _check(q_x, s_x, w_q, w_s, offs, block_size, out_dtype)
    return q_x.new_empty((q_x.shape[0], w_q.shape[-2]), dtype=out_dtype)


@fp8_block_mm.register_kernel("cuda")
def _fp8_block_mm_cuda(q_x: Tensor, s_x: Tensor, w_q: Tensor, w_s: Tensor, offs: Tensor | None, block_size: int,
                       out_dtype: torch.dtype, fast_accum: bool = True) -> Tensor:
    _check(q_x, s_x, w_q, w_s, offs, block_size, out_dtype)
    try:
        from recfx.kernels.fp8_block_gemm import fp8_block_gemm_kernel
    except ImportError as err:
        raise RuntimeError("recfx::fp8_block_mm on CUDA runs a Triton kernel, but Triton could not be imported "
                           f"({err}); install it with pip install 'recfx[gpu]'") from err
    n = w_q.shape[-2]
    out = q_x.new_empty((q_x.shape[0], n), dtype=out_dtype)
    return fp8_block_gemm_kernel(q_x, s_x, w_q, w_s, offs, block_size,
                                 weight_block_rows(n, w_s.shape[-2], block_size), out, fast_accum)


__all__ = ["OUT_DTYPES", "fp8_block_mm", "quantize_groups"]
