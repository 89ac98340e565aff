"""``recfx::fp8_attention``: non-causal attention whose two products run in FP8 (opt-in: docs/fp8.md).

recfx keeps attention scores and softmax in high precision by default (the FP8 policy quantizes GEMMs with
weights). ``cuda-fp8``'s ``backend_options={"fp8_attention": True}`` moves the two batched products of a plain
attention (no mask, not causal, no dropout) to FP8 tensor cores, with the Q/DQ placement of explicit FP8 attention:
on Q and K before the first product, on the softmax output and on V before the second::

    s_q = max|q[row]| / 448              (per query row and head: quantize_tokens)
    s_k = max|k[key]| / 448              (per key and head: quantize_tokens)
    s_v = max|v[:, d]| / 448             (per head-dim column over all keys: quantize_values)
    S   = (q8 @ k8ᵀ) * s_q * s_k * scale
    p   = exp(S - max S)                 (float32, in (0, 1])
    out = ((p * 448)_e4m3 @ v8) * s_v / (448 * sum p)

The quantizations are aten ops that Inductor fuses into the kernels producing Q, K and V (a K/V read by many
attentions is quantized once, by the pass that places the op); V is stored transposed, (B, H, D, T) with T
contiguous, the operand layout Hopper's FP8 MMA reads. The reference
(:func:`fp8_attention_reference`, the op on CPU) computes that formula with one softmax maximum per row; the
Triton kernel (``recfx.kernels.fp8_attention``) keeps a running maximum (flash attention), so its E4M3 roundings of
``p`` differ from the reference's: the two agree to FP8 rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.fx import Node

from recfx.ops.fp8 import E4M3_MAX, FP8_DTYPE
from recfx.ops.fp8_rows import quantize_rows_float32, row_scales
from recfx.ops.fp8_terms import Call

aten = torch.ops.aten
#: query dtypes the op takes
QUERY_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
#: the transposed values' rows are padded to a multiple of this many keys (16-byte aligned FP8 rows)
KEY_ALIGN = 16
#: head dims the op takes (the kernel's: a power of two, FP8 MMAs reduce over at least 32, and at 256 its sm_90
#: build spills)
HEAD_DIMS = (32, 64, 128)


def quantize_tokens(call: Call, x: Any) -> tuple[Any, Any]:
    """Queries or keys (B, H, L, D) -> (E4M3 (B, H, L, D) in x's memory order, float32 scales (B, H, L)), one scale
    per token and head."""
    xf = call(aten._to_copy.default, x, dtype=torch.float32)
    scale = row_scales(call, xf)  # (B, H, L, 1)
    return quantize_rows_float32(call, xf, scale), call(aten.squeeze.dim, scale, -1)


def quantize_values(call: Call, v: Any) -> tuple[Any, Any]:
    """Values (B, H, T, D) -> (E4M3 values transposed (B, H, D, T), T contiguous; float32 scales (B, H, D)), one
    scale per head-dim column (it factors out of the sum over keys). With a static key count the rows of the
    transposed copy are padded to a multiple of :data:`KEY_ALIGN` keys (the result is a view of the first T), so
    every row starts 16-byte aligned."""
    vf = call(aten._to_copy.default, v, dtype=torch.float32)
    keys = (v.meta["val"] if isinstance(v, Node) else v).shape[-2]
    pad = -keys % KEY_ALIGN if isinstance(keys, int) else 0  # a symbolic key count is not padded
    if pad:  # zeros (the column maxima do not change), shaped from vf without reading its batch size: a symbolic
        # batch stays symbolic (constant_pad_nd's fake implementation would specialise it)
        zero_row = call(aten.zeros_like.default, call(aten.slice.Tensor, vf, -2, 0, 1))
        vf = call(aten.cat.default, [vf, call(aten.expand.default, zero_row, [-1, -1, pad, -1])], -2)
    scale = row_scales(call, vf, dim=-2)  # (B, H, 1, D)
    q = quantize_rows_float32(call, vf, scale)
    vt = call(aten.clone.default, call(aten.transpose.int, q, -1, -2), memory_format=torch.contiguous_format)
    if pad:
        vt = call(aten.slice.Tensor, vt, -1, 0, keys)
    return vt, call(aten.squeeze.dim, scale, -2)


def _check(q_q: Tensor, q_scale: Tensor, k_q: Tensor, k_scale: Tensor, vt_q: Tensor, v_scale: Tensor,
           out_dtype: torch.dtype) -> None:
    if q_q.dtype != FP8_DTYPE or q_q.dim() != 4:
        raise ValueError(f"recfx::fp8_attention: q_q must be a float8_e4m3fn (B, H, N, D) tensor, got {q_q.dtype} "
                         f"{list(q_q.shape)}; make q_q, q_scale with quantize_tokens(EAGER, q)")
    if out_dtype not in QUERY_DTYPES:
        raise ValueError(f"recfx::fp8_attention: out_dtype must be one of {QUERY_DTYPES}, got {out_dtype}")
    b, h, n, d = q_q.shape
    if d not in HEAD_DIMS:
        raise ValueError(f"recfx::fp8_attention: head dim {d} is not one of {HEAD_DIMS}; use SDPA for this attention")
    if k_q.dtype != FP8_DTYPE or k_q.dim() != 4 or (k_q.shape[0], k_q.shape[1], k_q.shape[3]) != (b, h, d):
        raise ValueError(f"recfx::fp8_attention: k_q must be float8_e4m3fn (B, H, T, D) = ({b}, {h}, T, {d}), got "
                         f"{k_q.dtype} {list(k_q.shape)}; make k_q, k_scale with quantize_tokens(EAGER, k)")
    t = k_q.shape[2]
    if t < 1:
        raise ValueError("recfx::fp8_attention: no keys (T = 0)")
    if vt_q.dtype != FP8_DTYPE or tuple(vt_q.shape) != (b, h, d, t):
        raise ValueError(f"recfx::fp8_attention: vt_q must be float8_e4m3fn (B, H, D, T) = ({b}, {h}, {d}, {t}), "
                         f"got {vt_q.dtype} {list(vt_q.shape)}; make vt_q, v_scale with quantize_values(EAGER, v)")
    for name, s, shape in (("q_scale", q_scale, (b, h, n)), ("k_scale", k_scale, (b, h, t)),
                           ("v_scale", v_scale, (b, h, d))):
        if s.dtype != torch.float32 or tuple(s.shape) != shape:
            raise ValueError(f"recfx::fp8_attention: {name} must be float32 {list(shape)}, got {s.dtype} "
                             f"{list(s.shape)}; pass the scale quantize_tokens / quantize_values returned with its "
                             "tensor")


def empty_out(q_q: Tensor, out_dtype: torch.dtype, heads_inner: bool) -> Tensor:
    """The output (B, H, N, D): contiguous, or with ``heads_inner`` in (B, N, H, D) memory (what SDPA writes for the
    usual transposed query). The layout depends on the arguments only, never on q_q's strides: a compiler may
    lay q_q out differently from what it traced, but it reads the output as the fake implementation described it."""
    b, h, n, d = q_q.shape
    if heads_inner:
        return q_q.new_empty((b, n, h, d), dtype=out_dtype).transpose(1, 2)
    return q_q.new_empty((b, h, n, d), dtype=out_dtype)


def fp8_attention_reference(q_q: Tensor, q_scale: Tensor, k_q: Tensor, k_scale: Tensor, vt_q: Tensor,
                            v_scale: Tensor, scale: float, out_dtype: torch.dtype, heads_inner: bool = False
                            ) -> Tensor:
    """The formula of the module docstring in float32, one softmax maximum per row (the op's CPU implementation)."""
    s = (q_q.float() @ k_q.float().transpose(-1, -2)) * (q_scale[..., None] * scale) * k_scale[..., None, :]
    p = torch.exp(s - s.amax(-1, keepdim=True))
    p8 = (p * E4M3_MAX).to(FP8_DTYPE)
    out = (p8.float() @ vt_q.float().transpose(-1, -2)) * (v_scale[..., None, :] / E4M3_MAX) / p.sum(-1, keepdim=True)
    return empty_out(q_q, out_dtype, heads_inner).copy_(out)


@torch.library.custom_op("recfx::fp8_attention", mutates_args=())
def fp8_attention(q_q: Tensor, q_scale: Tensor, k_q: Tensor, k_scale: Tensor, vt_q: Tensor, v_scale: Tensor,
                  scale: float, out_dtype: torch.dtype, heads_inner: bool = False) -> Tensor:
    """``recfx::fp8_attention(Tensor q_q, Tensor q_scale, Tensor k_q, Tensor k_scale, Tensor vt_q, Tensor v_scale,
    float scale, ScalarType out_dtype, bool heads_inner=False) -> Tensor``: softmax(q kᵀ * scale) v with E4M3
    products (module docstring).

    Args:
        q_q, q_scale: queries from :func:`quantize_tokens`: E4M3 (B, H, N, D) and float32 (B, H, N).
        k_q, k_scale: keys from :func:`quantize_tokens`: E4M3 (B, H, T, D) and float32 (B, H, T).
        vt_q, v_scale: values from :func:`quantize_values`: E4M3 (B, H, D, T) and float32 (B, H, D).
        scale: softmax scale (usually D ** -0.5).
        out_dtype: bf16, fp16 or fp32.
        heads_inner: write the output in (B, N, H, D) memory (as SDPA does for a transposed query); else
            contiguous.

    Returns:
        (B, H, N, D) in ``out_dtype``, laid out as ``heads_inner`` says.

    Raises:
        ValueError: shapes or dtypes that do not fit (the message names the argument).

    Example:
        >>> import torch, recfx
        >>> from recfx.ops.fp8_attention import quantize_tokens, quantize_values
        >>> from recfx.ops.fp8_terms import EAGER
        >>> q, k, v = (torch.randn(1, 2, 5, 32) for _ in range(3))
        >>> out = torch.ops.recfx.fp8_attention(*quantize_tokens(EAGER, q), *quantize_tokens(EAGER, k),
        ...                                     *quantize_values(EAGER, v), 32 ** -0.5, torch.float32)
        >>> out.shape
        torch.Size([1, 2, 5, 32])
    """
    _check(q_q, q_scale, k_q, k_scale, vt_q, v_scale, out_dtype)
    return fp8_attention_reference(q_q, q_scale, k_q, k_scale, vt_q, v_scale, scale, out_dtype, heads_inner)


@fp8_attention.register_fake
def _fp8_attention_fake(q_q: Tensor, q_scale: Tensor, k_q: Tensor, k_scale: Tensor, vt_q: Tensor, v_scale: Tensor,
                        scale: float, out_dtype: torch.dtype, heads_inner: bool = False) -> Tensor:
    _check(q_q, q_scale, k_q, k_scale, vt_q, v_scale, out_dtype)
    return empty_out(q_q, out_dtype, heads_inner)


@fp8_attention.register_kernel("cuda")
def _fp8_attention_cuda(q_q: Tensor, q_scale: Tensor, k_q: Tensor, k_scale: Tensor, vt_q: Tensor, v_scale: Tensor,
                        scale: float, out_dtype: torch.dtype, heads_inner: bool = False) -> Tensor:
    _check(q_q, q_scale, k_q, k_scale, vt_q, v_scale, out_dtype)
    try:
        from recfx.kernels.fp8_attention import fp8_attention_kernel
    except ImportError as err:
        raise RuntimeError("recfx::fp8_attention on CUDA runs a Triton kernel, but Triton could not be imported "
                           f"({err}); install it with pip install 'recfx[gpu]'") from err
    return fp8_attention_kernel(q_q, q_scale, k_q, k_scale, vt_q, v_scale, scale,
                                empty_out(q_q, out_dtype, heads_inner))


__all__ = ["HEAD_DIMS", "KEY_ALIGN", "QUERY_DTYPES", "empty_out", "fp8_attention", "fp8_attention_reference",
           "quantize_tokens", "quantize_values"]
