"""FP8 GEMM ops: ``recfx::fp8_linear`` (per-tensor / per-channel weights) and ``recfx::fp8_linear_blocks``.

Both compute ``y = x @ w.T (+ bias)`` with FP8 x FP8 products, FP32 accumulation and an epilogue that applies
``s_x[m] * s_w[n]`` (+ bias) before casting to ``out_dtype``. The reference implementation calls
``torch._scaled_mm`` (CPU and GPU) with unit scales and float32 output, then applies the scales in float32. On
CUDA, shapes ``_scaled_mm`` cannot take (K or N not a multiple of 16, or a GPU without FP8 support) are computed
as ``dequantize(x_q) @ dequantize(w_q).T`` in float32: the same numbers up to the accumulation order.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from recfx.ops.fp8 import (
    FLOAT_DTYPES,
    FP8_DTYPE,
    expand_block_scale,
    group_quantize,
    per_token_quantize,
    static_quantize,
)

#: ``fp8_linear_blocks``' default block size B (OneRec-V2's 1 x 128 / 128 x 128 scales)
DEFAULT_BLOCK_SIZE = 128
#: K (and N) must be multiples of this for cuBLAS FP8 GEMMs.
_CUDA_FP8_ALIGN = 16


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])  # (M, K)


@functools.lru_cache(maxsize=16)
def _cuda_fp8(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 9)


def _scaled_mm_ok(a: Tensor, b: Tensor) -> bool:
    if a.device.type != "cuda":
        return True
    return _cuda_fp8(a.device) and a.shape[1] % _CUDA_FP8_ALIGN == 0 and b.shape[0] % _CUDA_FP8_ALIGN == 0


def scaled_mm(a: Tensor, b: Tensor, scale_a: Tensor, scale_b: Tensor) -> Tensor:
    """FP8 GEMM ``(a * scale_a) @ (b * scale_b).T`` in float32.

    Args:
        a: ``float8_e4m3fn`` ``[M, K]`` (row-major).
        b: ``float8_e4m3fn`` ``[N, K]`` (a weight; passed to ``_scaled_mm`` as ``b.t()``, column-major).
        scale_a: float32 ``[M, 1]``; scale_b: float32 ``[1, N]``.

    Returns:
        float32 ``[M, N]``.
    """
    if not _scaled_mm_ok(a, b):
        return (a.float() * scale_a) @ (b.float() * scale_b.t()).t()
    # Unit scales + a float32 epilogue: the one configuration every build accepts with a float32 output (torch 2.11's
    # CPU build takes only tensor-wise scales, CUDA row-wise scaling only emits bf16).
    one = torch.ones((), dtype=torch.float32, device=a.device)
    acc = torch._scaled_mm(a.contiguous(), b.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
    return acc.mul_(scale_a).mul_(scale_b)  # in place: the same float32 products, no two extra [M, N] tensors


def _epilogue(acc: Tensor, bias: Tensor | None, x: Tensor, n: int, out_dtype: torch.dtype | None) -> Tensor:
    if bias is not None:
        acc = acc.add_(bias.float())  # acc is the GEMM's own fresh result
    return acc.to(out_dtype or x.dtype).reshape(*x.shape[:-1], n)


def _check_linear(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None, out_dtype: torch.dtype | None,
                  op: str) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"recfx::{op}: x must be a float tensor, got {x.dtype} (it is quantized inside the op)")
    if w_q.dtype != FP8_DTYPE or w_q.dim() != 2:
        raise TypeError(f"recfx::{op}: w_q must be a 2-D float8_e4m3fn [N, K] weight, got {w_q.dtype} "
                        f"{list(w_q.shape)}")
    if x.dim() == 0 or x.shape[-1] != w_q.shape[1]:
        raise ValueError(f"recfx::{op}: x {list(x.shape)} and w_q {list(w_q.shape)} disagree on K")
    if w_scale.dtype != torch.float32:
        raise TypeError(f"recfx::{op}: w_scale must be float32, got {w_scale.dtype}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != w_q.shape[0]):
        raise ValueError(f"recfx::{op}: bias must be [N] = [{w_q.shape[0]}], got {list(bias.shape)}")
    if out_dtype is not None and out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"recfx::{op}: out_dtype must be a float dtype or None, got {out_dtype}")


@torch.library.custom_op("recfx::fp8_linear", mutates_args=())
def fp8_linear(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None = None, x_scale: Tensor | None = None,
               out_dtype: torch.dtype | None = None) -> Tensor:
    """``recfx::fp8_linear(Tensor x, Tensor w_q, Tensor w_scale, Tensor? bias=None, Tensor? x_scale=None,
    ScalarType? out_dtype=None) -> Tensor``: an ``nn.Linear`` with FP8 weights and FP8 activations.

    Args:
        x: high-precision activations ``[..., K]``; the op quantizes them: with ``x_scale=None`` dynamically per
            token (``quantize_fp8_per_token``), else statically with ``x_scale`` (float32 ``[]``, per-tensor, from
            calibration).
        w_q: ``float8_e4m3fn`` weight ``[N, K]`` (quantized offline, e.g. ``recfx.ops.fp8.quantize_weight``).
        w_scale: float32 ``[N, 1]`` (per output channel) or ``[]`` (per tensor).
        bias: optional ``[N]`` (any float dtype), added in float32 in the epilogue.
        out_dtype: result dtype; ``None`` means ``x.dtype``.

    Returns:
        ``[..., N]``: ``(s_x[m] * s_w[n] * sum_k q_x[m, k] * q_w[n, k] + bias[n]).to(out_dtype)``, accumulated in
        float32.

    Raises:
        TypeError / ValueError: dtypes or shapes that do not fit (the message names the argument).

    Example:
        >>> import torch, recfx
        >>> from recfx.ops.fp8 import quantize_weight
        >>> w_q, w_s = quantize_weight(torch.randn(16, 32))
        >>> torch.ops.recfx.fp8_linear(torch.randn(2, 5, 32), w_q, w_s).shape
        torch.Size([2, 5, 16])
    """
    _check_linear(x, w_q, w_scale, bias, out_dtype, "fp8_linear")
    _check_scales(w_q, w_scale, x_scale)
    n = w_q.shape[0]
    rows = _rows(x)
    if x_scale is None:
        q, s = per_token_quantize(rows)
    else:
        q, s = static_quantize(rows, x_scale), x_scale.reshape(1, 1).expand(rows.shape[0], 1)
    s_w = w_scale.reshape(1, -1).expand(1, n)
    return _epilogue(scaled_mm(q, w_q, s, s_w), bias, x, n, out_dtype)


def _check_scales(w_q: Tensor, w_scale: Tensor, x_scale: Tensor | None) -> None:
    n = w_q.shape[0]
    if w_scale.numel() != 1 and tuple(w_scale.shape) != (n, 1):
        raise ValueError(f"recfx::fp8_linear: w_scale must be [] (per tensor) or [N, 1] = [{n}, 1] (per output "
                         f"channel), got {list(w_scale.shape)}")
    if x_scale is not None and (x_scale.numel() != 1 or x_scale.dtype != torch.float32):
        raise ValueError(f"recfx::fp8_linear: x_scale must be a float32 per-tensor scale [], got {x_scale.dtype} "
                         f"{list(x_scale.shape)}")


@fp8_linear.register_fake
def _(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None = None, x_scale: Tensor | None = None,
      out_dtype: torch.dtype | None = None) -> Tensor:
    _check_linear(x, w_q, w_scale, bias, out_dtype, "fp8_linear")
    _check_scales(w_q, w_scale, x_scale)
    return x.new_empty((*x.shape[:-1], w_q.shape[0]), dtype=out_dtype or x.dtype)


@torch.library.custom_op("recfx::fp8_linear_blocks", mutates_args=())
def fp8_linear_blocks(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None = None,
                      block_size: int = DEFAULT_BLOCK_SIZE, out_dtype: torch.dtype | None = None) -> Tensor:
    """``recfx::fp8_linear_blocks(Tensor x, Tensor w_q, Tensor w_scale, Tensor? bias=None, SymInt block_size=128,
    ScalarType? out_dtype=None) -> Tensor``: block-scaled FP8 linear (OneRec-V2's MoE expert GEMMs).

    Activations are quantized dynamically in 1 x B groups along K (``quantize_fp8_groups``), weights offline in
    B x B blocks (``quantize_weight(w, "block", B)``) or in 1 x B groups along K; partial edge blocks are allowed.

    Args:
        x: high-precision activations ``[..., K]``.
        w_q: ``float8_e4m3fn`` ``[N, K]``.
        w_scale: float32 ``[ceil(N / B), ceil(K / B)]`` (B x B blocks) or ``[N, ceil(K / B)]`` (1 x B groups).
        bias: optional ``[N]``.
        block_size: B.
        out_dtype: result dtype; ``None`` means ``x.dtype``.

    Returns:
        ``[..., N]``: ``sum_kb s_x[m, kb] * s_w[n // R, kb] * sum_{k in kb} q_x[m, k] * q_w[n, k] (+ bias)`` with
        R = B (blocks) or 1 (groups), one
        FP8 GEMM with float32 accumulation per K block.

    Example:
        >>> import torch, recfx
        >>> from recfx.ops.fp8 import quantize_weight
        >>> w_q, w_s = quantize_weight(torch.randn(256, 256), "block", 128)
        >>> torch.ops.recfx.fp8_linear_blocks(torch.randn(3, 256), w_q, w_s).shape
        torch.Size([3, 256])
    """
    _check_blocks_linear(x, w_q, w_scale, bias, block_size, out_dtype)
    q, s_x = group_quantize(_rows(x), block_size)  # (M, K), (M, K/B)
    acc = blocks_matmul(q, s_x, w_q, w_scale, block_size)
    return _epilogue(acc, bias, x, w_q.shape[0], out_dtype)


def blocks_matmul(q: Tensor, s_x: Tensor, w_q: Tensor, w_s: Tensor, block_size: int) -> Tensor:
    """``sum_kb (q[:, kb] @ w_q[:, kb]ᵀ) * s_x[:, kb] * s_w[n // R, kb]`` in float32, block by block: one FP8 GEMM
    per K block, scaled, then added (``q`` (M, K) and ``w_q`` (N, K) E4M3; ``s_x`` (M, ceil(K/B)); ``w_s`` as
    :func:`fp8_linear_blocks`' ``w_scale``, R = :func:`weight_block_rows`). ``recfx::fp8_block_mm`` shares it."""
    n, k = w_q.shape
    rows = weight_block_rows(n, w_s.shape[0], block_size)
    s_w = expand_block_scale(w_s, (n, w_s.shape[1]), (rows, 1))  # (N, K/B)
    acc = torch.zeros(q.shape[0], n, dtype=torch.float32, device=q.device)
    for kb, k0 in enumerate(range(0, k, block_size)):
        k1 = min(k0 + block_size, k)
        acc += scaled_mm(q[:, k0:k1], w_q[:, k0:k1], s_x[:, kb : kb + 1], s_w[:, kb][None, :])
    return acc


def _check_blocks_linear(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None, block_size: int,
                         out_dtype: torch.dtype | None) -> None:
    _check_linear(x, w_q, w_scale, bias, out_dtype, "fp8_linear_blocks")
    if block_size <= 0:
        raise ValueError(f"recfx::fp8_linear_blocks: block_size must be > 0, got {block_size}")
    n, k = w_q.shape
    blocks, groups = [-(-n // block_size), -(-k // block_size)], [n, -(-k // block_size)]
    if list(w_scale.shape) not in (blocks, groups):
        raise ValueError(f"recfx::fp8_linear_blocks: w_scale must be [ceil(N/B), ceil(K/B)] = {blocks} (B x B "
                         f"blocks) or [N, ceil(K/B)] = {groups} (1 x B groups) for w_q {[n, k]} and B={block_size}, "
                         f"got {list(w_scale.shape)}")


def weight_block_rows(n: int, scale_rows: int, block_size: int) -> int:
    """The weight rows that share one scale in ``fp8_linear_blocks``: 1 for a ``[N, ceil(K/B)]`` scale (1 x B
    groups), B for ``[ceil(N/B), ceil(K/B)]`` (B x B blocks). When both shapes coincide (N = 1 or B = 1) the two
    readings give the same scales."""
    return 1 if scale_rows == n else block_size


@fp8_linear_blocks.register_fake
def _(x: Tensor, w_q: Tensor, w_scale: Tensor, bias: Tensor | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
      out_dtype: torch.dtype | None = None) -> Tensor:
    _check_blocks_linear(x, w_q, w_scale, bias, block_size, out_dtype)
    return x.new_empty((*x.shape[:-1], w_q.shape[0]), dtype=out_dtype or x.dtype)
