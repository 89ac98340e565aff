"""FP8 (E4M3) quantize / dequantize ops: ``recfx::quantize_fp8``, ``recfx::dequantize_fp8`` and the dynamic ones.

Format (the FP8 spec of OneRec-V2's quantized inference): ``torch.float8_e4m3fn`` (max 448), symmetric, zero point 0.

    scale = max(amax, AMAX_FLOOR) / 448        (float32, strictly positive)
    q     = saturate(round_to_nearest_even(x / scale))   clamped to [-448, 448]
    x_hat = q * scale                           (computed in float32, then cast to the output dtype)

The quotient ``x / scale`` is formed in float64 and rounded once, to the E4M3 grid, half to even: the result is the
exactly rounded value of the real quotient (a float32 division followed by a cast can round twice and differ by one
FP8 step on about one element in a million; kernels that do so should compare with a one-step tolerance).
NaN stays NaN, +-inf saturates to +-448.

Scale shapes (every scale is float32):

=================  ====================  ==============================================================
granularity        x shape               scale shape
=================  ====================  ==============================================================
per-tensor         any                   ``[]`` (or all-ones dims, e.g. ``[1, 1]``)
per-channel        weight ``[N, K]``     ``[N, 1]`` (one scale per output channel)
per-token          ``[..., K]``          ``[..., 1]`` (one scale per row; dynamic, computed at run time)
1 x G groups       ``[..., K]``          ``[..., ceil(K / G)]`` (``quantize_fp8_groups``)
B x B blocks       weight ``[N, K]``     ``[ceil(N / B), ceil(K / B)]`` (``dequantize_fp8_blocks``)
=================  ====================  ==============================================================

``quantize_fp8`` / ``dequantize_fp8`` take any scale that broadcasts to ``x`` (the first three rows).
Groups and blocks use the ``*_groups`` / ``*_blocks`` ops, whose ``block_size`` says how many elements of each
trailing dim share one scale (a last partial block is allowed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recfx.ops.fp8_terms import AMAX_FLOOR, E4M3_MAX, weight_granularity

FP8_DTYPE = torch.float8_e4m3fn
#: Mantissa bits of E4M3 and the exponent of its smallest normal number (2**-6).
_MANTISSA_BITS = 3
_MIN_NORMAL_EXP = -6
#: Input dtypes the ops accept for high-precision tensors.
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def scale_from_amax(amax: Tensor) -> Tensor:
    """The FP8 scale for a (per-tensor, per-channel, per-token...) absolute maximum: ``max(amax, 1e-12) / 448``.

    Args:
        amax: absolute maxima, any shape, any float dtype.

    Returns:
        float32 scales of the same shape, all > 0 (NaN stays NaN).

    Example:
        >>> scale_from_amax(torch.tensor([448.0, 0.0]))
        tensor([1.0000e+00, 2.2321e-15])
    """
    # float64 division rounded once to float32: the same bits on every device (CUDA divides by a reciprocal)
    return (amax.double().clamp(min=AMAX_FLOOR) / E4M3_MAX).float()


def round_to_e4m3(v: Tensor) -> Tensor:
    """Round float64 values to the E4M3 grid (half to even), saturating at +-448; returns float64 grid values."""
    v = v.clamp(-E4M3_MAX, E4M3_MAX)
    _, exp = torch.frexp(v)  # |v| in [2**(exp-1), 2**exp)
    step = (exp - 1 - _MANTISSA_BITS).clamp(min=_MIN_NORMAL_EXP - _MANTISSA_BITS)  # log2 of the grid spacing
    return torch.ldexp(torch.round(torch.ldexp(v, -step)), step)


def _check_float(name: str, t: Tensor, op: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"recfx::{op}: {name} must be float32/bfloat16/float16/float64, got {t.dtype}")


def _check_scale(scale: Tensor, shape: Sequence[int], op: str) -> None:
    if scale.dtype != torch.float32:
        raise TypeError(f"recfx::{op}: scale must be float32, got {scale.dtype}")
    try:
        torch.broadcast_shapes(tuple(scale.shape), tuple(shape))
    except RuntimeError:
        raise ValueError(f"recfx::{op}: scale of shape {list(scale.shape)} does not broadcast to {list(shape)}; "
                         "use [] (per-tensor), [N, 1] (per-channel) or [..., 1] (per-token)") from None
    if scale.dim() > len(shape):
        raise ValueError(f"recfx::{op}: scale has more dims ({scale.dim()}) than the tensor ({len(shape)})")


def static_quantize(x: Tensor, scale: Tensor) -> Tensor:
    """The computation of ``recfx::quantize_fp8`` as a plain function (for other ops' kernels)."""
    return _quantize(x, scale)


#: The float64 quotient and its rounding temporaries take ~5 x 8 bytes per element: quantizing runs over slices of
#: at most this many elements (0.5 MiB per float64 temporary), so the reference's extra memory is ~2.5 MiB whatever
#: the tensor's size. 2**18 (2 MiB per temporary) made these temporaries the peak of onerec-tiny's eager-fp8 call at
#: batch 8 (1.9x eager's activation memory; 1.3x with 2**16, ``tests/backends/test_eager_fp8_memory.py``).
QUANTIZE_CHUNK_ELEMENTS = 1 << 16
#: On a GPU each slice costs ~10 kernel launches, which then dominate (a 49,152 x 2,048 activation is 1,536 slices
#: of 2**16): slices of 2**22 elements there (32 MiB per float64 temporary, small beside a GPU model's activations).
QUANTIZE_CHUNK_ELEMENTS_CUDA = 1 << 22


def chunk_elements(t: Tensor) -> int:
    """Elements per slice of the reference quantization for a tensor on ``t``'s device."""
    return QUANTIZE_CHUNK_ELEMENTS_CUDA if t.is_cuda else QUANTIZE_CHUNK_ELEMENTS


def _quantize(x: Tensor, scale: Tensor) -> Tensor:
    x, scale = torch.broadcast_tensors(x, scale)  # views: no copy of a broadcast scale
    out = torch.empty(x.shape, dtype=FP8_DTYPE, device=x.device)
    _quantize_into(out, x, scale)
    return out


def _quantize_into(out: Tensor, x: Tensor, scale: Tensor) -> None:
    """``out = round_to_e4m3(x / scale)`` slice by slice along dim 0 (elementwise: the same bits as in one go)."""
    n, chunk = x.numel(), chunk_elements(x)
    if n <= chunk or x.dim() == 0:
        out.copy_(round_to_e4m3(x.double() / scale.double()))  # grid values: the cast to E4M3 is exact
        return
    if x.shape[0] == 1:  # one slab: slice along the next dim
        _quantize_into(out[0], x[0], scale[0])
        return
    rows = max(1, x.shape[0] * chunk // n)
    for i in range(0, x.shape[0], rows):
        _quantize_into(out[i : i + rows], x[i : i + rows], scale[i : i + rows])


@torch.library.custom_op("recfx::quantize_fp8", mutates_args=())
def quantize_fp8(x: Tensor, scale: Tensor) -> Tensor:
    """``recfx::quantize_fp8(Tensor x, Tensor scale) -> Tensor``: static FP8 quantization with a given scale.

    Args:
        x: float tensor (float32 / bfloat16 / float16 / float64), any shape.
        scale: float32, broadcastable to ``x``: ``[]`` per-tensor, ``[N, 1]`` per-channel, ``[..., 1]`` per-token.

    Returns:
        ``float8_e4m3fn`` tensor shaped like ``x``: ``saturate(round(x / scale))``.

    Raises:
        TypeError / ValueError: wrong dtypes, or a scale that does not broadcast to ``x``.

    Example:
        >>> import torch, recfx
        >>> q = torch.ops.recfx.quantize_fp8(torch.tensor([1.0, -3.0, 1000.0]), torch.tensor(0.5))
        >>> q.float().tolist()
        [2.0, -6.0, 448.0]
    """
    _check_float("x", x, "quantize_fp8")
    _check_scale(scale, x.shape, "quantize_fp8")
    return _quantize(x, scale)


@quantize_fp8.register_fake
def _(x: Tensor, scale: Tensor) -> Tensor:
    _check_float("x", x, "quantize_fp8")
    _check_scale(scale, x.shape, "quantize_fp8")
    return torch.empty_like(x, dtype=FP8_DTYPE)


@torch.library.custom_op("recfx::dequantize_fp8", mutates_args=())
def dequantize_fp8(q: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
    """``recfx::dequantize_fp8(Tensor q, Tensor scale, ScalarType out_dtype) -> Tensor``: ``q * scale``.

    Args:
        q: ``float8_e4m3fn`` tensor.
        scale: float32, broadcastable to ``q`` (same shapes as :func:`quantize_fp8`).
        out_dtype: the result dtype (float32 / bfloat16 / float16 / float64).

    Returns:
        ``(q.float() * scale).to(out_dtype)``, shaped like ``q``.

    Example:
        >>> import torch, recfx
        >>> q = torch.tensor([2.0, -6.0]).to(torch.float8_e4m3fn)
        >>> torch.ops.recfx.dequantize_fp8(q, torch.tensor(0.5), torch.float32).tolist()
        [1.0, -3.0]
    """
    _check_dequant(q, scale, out_dtype)
    return (q.float() * scale).to(out_dtype)


def _check_dequant(q: Tensor, scale: Tensor, out_dtype: torch.dtype, op: str = "dequantize_fp8") -> None:
    if q.dtype != FP8_DTYPE:
        raise TypeError(f"recfx::{op}: q must be float8_e4m3fn, got {q.dtype}")
    if out_dtype not in FLOAT_DTYPES:
        raise TypeError(f"recfx::{op}: out_dtype must be float32/bfloat16/float16/float64, got {out_dtype}")
    if op == "dequantize_fp8":
        _check_scale(scale, q.shape, op)
    elif scale.dtype != torch.float32:
        raise TypeError(f"recfx::{op}: scale must be float32, got {scale.dtype}")


@dequantize_fp8.register_fake
def _(q: Tensor, scale: Tensor, out_dtype: torch.dtype) -> Tensor:
    _check_dequant(q, scale, out_dtype)
    return torch.empty_like(q, dtype=out_dtype)


@torch.library.custom_op("recfx::quantize_fp8_per_token", mutates_args=())
def quantize_fp8_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """``recfx::quantize_fp8_per_token(Tensor x) -> (Tensor q, Tensor scale)``: dynamic per-row quantization.

    Args:
        x: float tensor ``[..., K]`` (one token per row).

    Returns:
        ``q`` (``float8_e4m3fn``, shaped like ``x``) and ``scale`` (float32 ``[..., 1]``), with
        ``scale = max(amax over K, 1e-12) / 448`` computed at run time.

    Example:
        >>> import torch, recfx
        >>> q, s = torch.ops.recfx.quantize_fp8_per_token(torch.tensor([[448.0, 1.0], [0.0, 0.0]]))
        >>> s.shape, q.float()[0].tolist()
        (torch.Size([2, 1]), [448.0, 1.0])
    """
    _check_float("x", x, "quantize_fp8_per_token")
    return per_token_quantize(x)


def per_token_quantize(x: Tensor) -> tuple[Tensor, Tensor]:
    """The computation of ``recfx::quantize_fp8_per_token`` as a plain function (for other ops' kernels)."""
    if x.numel() == 0:
        return torch.empty_like(x, dtype=FP8_DTYPE), torch.ones((*x.shape[:-1], 1), device=x.device)
    if x.dim() == 0:
        scale = scale_from_amax(x.abs())
        return _quantize(x, scale), scale
    rows = x.reshape(-1, x.shape[-1])  # (M, K)
    step = max(1, chunk_elements(x) // max(1, rows.shape[1]))
    amax = torch.cat([rows[i : i + step].abs().amax(dim=-1, keepdim=True) for i in range(0, rows.shape[0], step)])
    scale = scale_from_amax(amax).reshape(*x.shape[:-1], 1)  # no full-size |x| temporary
    return _quantize(x, scale), scale


@quantize_fp8_per_token.register_fake
def _(x: Tensor) -> tuple[Tensor, Tensor]:
    _check_float("x", x, "quantize_fp8_per_token")
    return torch.empty_like(x, dtype=FP8_DTYPE), x.new_empty((*x.shape[:-1], 1), dtype=torch.float32)


def _groups(k: int, group_size: int) -> int:
    return -(-k // group_size)


@torch.library.custom_op("recfx::quantize_fp8_groups", mutates_args=())
def quantize_fp8_groups(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """``recfx::quantize_fp8_groups(Tensor x, SymInt group_size) -> (Tensor q, Tensor scale)``: dynamic 1 x G blocks.

    Each row is split along its last dim into groups of ``group_size`` (the last group may be shorter); each group
    gets its own scale (the block-scaled activations of OneRec-V2's MoE GEMMs use ``group_size=128``).

    Args:
        x: float tensor ``[..., K]``.
        group_size: elements per group (> 0).

    Returns:
        ``q`` (``float8_e4m3fn``, shaped like ``x``) and ``scale`` (float32 ``[..., ceil(K / group_size)]``).

    Example:
        >>> import torch, recfx
        >>> q, s = torch.ops.recfx.quantize_fp8_groups(torch.randn(3, 256), 128)
        >>> s.shape
        torch.Size([3, 2])
    """
    _check_groups(x, group_size)
    return group_quantize(x, group_size)


def group_quantize(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """The computation of ``recfx::quantize_fp8_groups`` as a plain function (for other ops' kernels)."""
    k = x.shape[-1]
    g = _groups(k, group_size)
    rows = x.reshape(-1, k)  # (M, K)
    step = max(1, chunk_elements(x) // k)
    amax = torch.cat([_group_amax(rows[i : i + step], g, group_size) for i in range(0, rows.shape[0], step)]
                     or [_group_amax(rows, g, group_size)])
    scale = scale_from_amax(amax).reshape(*x.shape[:-1], g)  # (..., G)
    q = torch.empty(x.shape, dtype=FP8_DTYPE, device=x.device)
    whole = k // group_size  # groups of full size, then at most one shorter group
    for first, count, width in ((0, whole, group_size), (whole, g - whole, k - whole * group_size)):
        if count and width:
            cols = slice(first * group_size, first * group_size + count * width)
            x_g = x[..., cols].unflatten(-1, (count, width))  # (..., count, width)
            s_g = scale[..., first : first + count, None]  # (..., count, 1)
            _quantize_into(q[..., cols].unflatten(-1, (count, width)), *torch.broadcast_tensors(x_g, s_g))
    return q, scale


def _group_amax(rows: Tensor, groups: int, group_size: int) -> Tensor:
    padded = torch.nn.functional.pad(rows.abs(), (0, groups * group_size - rows.shape[-1]))
    return padded.unflatten(-1, (groups, group_size)).amax(dim=-1)  # (rows, G)


def _check_groups(x: Tensor, group_size: int) -> None:
    _check_float("x", x, "quantize_fp8_groups")
    if group_size <= 0:
        raise ValueError(f"recfx::quantize_fp8_groups: group_size must be > 0, got {group_size}")
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"recfx::quantize_fp8_groups: x must have a non-empty last dim, got {list(x.shape)}")


@quantize_fp8_groups.register_fake
def _(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    _check_groups(x, group_size)
    g = _groups(x.shape[-1], group_size)
    return torch.empty_like(x, dtype=FP8_DTYPE), x.new_empty((*x.shape[:-1], g), dtype=torch.float32)


def expand_block_scale(scale: Tensor, shape: Sequence[int], block_size: Sequence[int]) -> Tensor:
    """Repeat a block scale along the trailing ``len(block_size)`` dims so that it broadcasts to ``shape``."""
    lead = len(shape) - len(block_size)
    for i, b in enumerate(block_size):
        d = lead + i
        scale = scale.repeat_interleave(b, dim=d).narrow(d, 0, shape[d])
    return scale


def _check_blocks(q: Tensor, scale: Tensor, block_size: Sequence[int], out_dtype: torch.dtype) -> None:
    op = "dequantize_fp8_blocks"
    _check_dequant(q, scale, out_dtype, op)
    if not block_size or len(block_size) > q.dim() or any(b <= 0 for b in block_size):
        raise ValueError(f"recfx::{op}: block_size must hold 1..{q.dim()} positive sizes, got {list(block_size)}")
    lead = q.dim() - len(block_size)
    want = [*q.shape[:lead], *(_groups(q.shape[lead + i], b) for i, b in enumerate(block_size))]
    if scale.dim() != q.dim() or any(s != w and s != 1 for s, w in zip(scale.shape, want)):
        raise ValueError(f"recfx::{op}: scale of shape {list(scale.shape)} does not fit q {list(q.shape)} with "
                         f"blocks {list(block_size)} over the trailing dims; expected {want}")


@torch.library.custom_op("recfx::dequantize_fp8_blocks", mutates_args=())
def dequantize_fp8_blocks(q: Tensor, scale: Tensor, block_size: list[int], out_dtype: torch.dtype) -> Tensor:
    """``recfx::dequantize_fp8_blocks(Tensor q, Tensor scale, SymInt[] block_size, ScalarType out_dtype) -> Tensor``.

    Block-scaled dequantization: ``block_size`` gives the block extent along each of the trailing dims of ``q``;
    ``scale`` has one entry per block (``[..., ceil(K / G)]`` with ``block_size=[G]`` for 1 x G activation groups,
    ``[ceil(N / B), ceil(K / B)]`` with ``block_size=[B, B]`` for weight blocks). A scale dim of 1 broadcasts.

    Returns:
        ``(q.float() * scale_expanded).to(out_dtype)``, shaped like ``q``.

    Example:
        >>> import torch, recfx
        >>> q = torch.ones(4, 4).to(torch.float8_e4m3fn)
        >>> s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> torch.ops.recfx.dequantize_fp8_blocks(q, s, [2, 2], torch.float32)[:, 2].tolist()
        [2.0, 2.0, 4.0, 4.0]
    """
    _check_blocks(q, scale, block_size, out_dtype)
    return (q.float() * expand_block_scale(scale, q.shape, block_size)).to(out_dtype)


@dequantize_fp8_blocks.register_fake
def _(q: Tensor, scale: Tensor, block_size: list[int], out_dtype: torch.dtype) -> Tensor:
    _check_blocks(q, scale, block_size, out_dtype)
    return torch.empty_like(q, dtype=out_dtype)


def block_amax(w: Tensor, block: Sequence[int]) -> Tensor:
    """The absolute maximum of each ``block[0] x block[1]`` block of a 2-D ``w`` (partial edge blocks allowed).

    Example:
        >>> block_amax(torch.tensor([[1.0, -5.0, 2.0], [3.0, 0.0, -4.0]]), (2, 2)).tolist()
        [[5.0, 4.0]]
    """
    (n, k), (bn, bk) = w.shape, block
    gn, gk = _groups(n, bn), _groups(k, bk)
    padded = torch.nn.functional.pad(w.abs(), (0, gk * bk - k, 0, gn * bn - n))
    return padded.reshape(gn, bn, gk, bk).amax(dim=(1, 3))  # (N/bn, K/bk)


def quantize_weight(w: Tensor, granularity: str = "per_channel", block_size: int = 128) -> tuple[Tensor, Tensor]:
    """Quantize a weight ``[N, K]`` offline (a Python helper, not an op: weights are quantized once).

    Args:
        w: float weight ``[N, K]`` (an ``nn.Linear`` weight). It is not modified.
        granularity: a registered weight granularity (``recfx.ops.fp8_terms.WEIGHT_GRANULARITIES``):
            ``"per_channel"`` (scale ``[N, 1]``), ``"per_tensor"`` (scale ``[]``), ``"block"``
            (scale ``[ceil(N / B), ceil(K / B)]`` for ``block_size`` B), or one added with ``register_granularity``.
        block_size: B for block-scaled granularities.

    Returns:
        ``(w_q, w_scale)``: a new ``float8_e4m3fn`` tensor and its float32 scale.

    Raises:
        ValueError: not 2-D, or an unknown granularity.

    Example:
        >>> w_q, s = quantize_weight(torch.randn(8, 4))
        >>> w_q.dtype, s.shape
        (torch.float8_e4m3fn, torch.Size([8, 1]))
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_weight expects a 2-D [N, K] weight, got shape {list(w.shape)}")
    _check_float("w", w, "quantize_weight")
    w = w.detach()
    kind = weight_granularity(granularity)  # ValueError listing the known ones
    scale = kind.scales(w, block_size)
    blocks = kind.blocks(block_size)
    return _quantize(w, scale if blocks is None else expand_block_scale(scale, w.shape, blocks)), scale
