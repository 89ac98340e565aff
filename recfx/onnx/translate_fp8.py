"""ONNX translations of recfx's FP8 ops: standard ``QuantizeLinear`` / ``DequantizeLinear`` (opset >= 21).

Every translation is an onnxscript *traced* function: ``torch.onnx.export`` calls it with the node's inputs as
``onnx_ir`` values (shapes and dtypes known) and records the ONNX ops it emits.

Conventions (docs/fp8.md, TensorRT's explicit quantization):

- FP8 is ``FLOAT8E4M3FN`` with an explicit zero point of 0 (shaped like the scale), ``saturate=1``.
- A *static* scale (an initializer: weights, calibrated activations) becomes the Q/DQ scale directly: per-tensor
  (``[]``) or per-axis (``[N, 1]`` on ``[N, K]`` becomes a 1-D ``[N]`` scale with ``axis=0``).
- A *dynamic* scale (computed in the graph: per-token, per-group) cannot be a Q/DQ scale for TensorRT, so the
  division and the multiplication are explicit: ``q = Q(x / s, 1.0)``, ``x_hat = DQ(q, 1.0) * s``. For a GEMM the
  per-row factor moves after the ``MatMul`` (the epilogue ``s_x[m] * s_w[n]`` of ``recfx::fp8_linear``).
- Inputs are cast to float32 before ``QuantizeLinear`` (exact for fp16/bf16; ONNX Runtime's CPU provider has no
  bf16 ``QuantizeLinear``) and ``DequantizeLinear`` outputs are cast to the op's ``out_dtype``.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir
from onnxscript import opset21

from recfx.ops.fp8 import AMAX_FLOOR, E4M3_MAX
from recfx.ops.fp8_linear import weight_block_rows

#: The ops, untyped: onnxscript's typed opset stubs do not know traced values.
op: Any = opset21
FP8 = ir.DataType.FLOAT8E4M3FN
FLOAT = ir.DataType.FLOAT


def _zero_point(n: int | None = None) -> Any:
    """An FP8 zero point of 0: a scalar, or 1-D of length ``n`` for per-axis scales."""
    if n is None:
        return op.Constant(value=ir.tensor(0.0, dtype=FP8, name="fp8_zero_point"))
    return op.Constant(value=ir.tensor([0.0] * n, dtype=FP8, name="fp8_zero_point"))


def _one() -> Any:
    return op.Constant(value=ir.tensor(1.0, dtype=FLOAT, name="fp8_unit_scale"))


def _is_static(v: Any) -> bool:
    """An initializer or a graph input (no producing node): usable as a TensorRT Q/DQ scale."""
    return v.producer() is None


def scale_layout(x_shape: Any, scale: Any) -> tuple[str, int | None]:
    """How a recfx scale maps onto ONNX Q/DQ: ``("tensor", None)``, ``("axis", axis)`` or ``("dynamic", None)``.

    Per-axis needs a static scale with exactly one dim that is not 1, equal to ``x``'s dim there (``[N, 1]`` for a
    ``[N, K]`` weight gives axis 0). Anything else (per-token, computed scales) is dynamic.
    """
    if not _is_static(scale) or scale.shape is None:
        return "dynamic", None
    dims = list(scale.shape)
    if not all(isinstance(d, int) for d in dims):
        return "dynamic", None
    if all(d == 1 for d in dims):
        return "tensor", None
    big = [i for i, d in enumerate(dims) if d != 1]
    rank = len(x_shape)
    axis = big[0] + rank - len(dims)
    if len(big) == 1 and axis >= 0 and x_shape[axis] == dims[big[0]]:
        return "axis", axis
    return "dynamic", None


def _to_float(x: Any) -> Any:
    return x if x.dtype == FLOAT else op.Cast(x, to=FLOAT)


def _cast(y: Any, dtype: Any) -> Any:
    return y if dtype is None or dtype == FLOAT else op.Cast(y, to=int(dtype))


def quantize(x: Any, scale: Any) -> Any:
    """``QuantizeLinear`` of ``x`` with a recfx scale (static: as the Q scale; dynamic: ``Q(x / s, 1)``)."""
    layout, axis = scale_layout(list(x.shape), scale)
    xf = _to_float(x)
    if layout == "tensor":
        return op.QuantizeLinear(xf, op.Reshape(scale, op.Constant(value_ints=[])) if scale.shape.rank() else scale,
                                 _zero_point(), saturate=1)
    if layout == "axis":
        n = next(d for d in scale.shape if d != 1)
        return op.QuantizeLinear(xf, op.Reshape(scale, op.Constant(value_ints=[-1])), _zero_point(n), axis=axis,
                                 saturate=1)
    return op.QuantizeLinear(op.Div(xf, scale), _one(), _zero_point(), saturate=1)


def dequantize(q: Any, scale: Any, out_dtype: Any = None, shape: list[Any] | None = None) -> Any:
    """``DequantizeLinear`` of an FP8 tensor with a recfx scale, cast to ``out_dtype`` (default float32).

    ``shape`` is ``q``'s shape when the tracer does not know it (``q`` made by a translation in the same call).
    """
    layout, axis = scale_layout(shape if shape is not None else list(q.shape), scale)
    if layout == "tensor":
        s = op.Reshape(scale, op.Constant(value_ints=[])) if scale.shape.rank() else scale
        return _cast(op.DequantizeLinear(q, s, _zero_point()), out_dtype)
    if layout == "axis":
        n = next(d for d in scale.shape if d != 1)
        s = op.Reshape(scale, op.Constant(value_ints=[-1]))
        return _cast(op.DequantizeLinear(q, s, _zero_point(n), axis=axis), out_dtype)
    return _cast(op.Mul(op.DequantizeLinear(q, _one(), _zero_point()), scale), out_dtype)


def per_token_scale(x: Any) -> Any:
    """``max(amax over the last dim, 1e-12) / 448`` as float32 ``[..., 1]`` (ReduceMax / Max / Div)."""
    amax = op.ReduceMax(op.Abs(_to_float(x)), op.Constant(value_ints=[-1]), keepdims=1)
    floor = op.Constant(value=ir.tensor(AMAX_FLOOR, dtype=FLOAT, name="fp8_amax_floor"))
    fmax = op.Constant(value=ir.tensor(E4M3_MAX, dtype=FLOAT, name="fp8_max"))
    return op.Div(op.Max(amax, floor), fmax)


# --- translations of the recfx:: ops (registered in recfx/onnx/translate.py) ---------------------------------------


def quantize_fp8(x: Any, scale: Any) -> Any:
    """``recfx::quantize_fp8(x, scale)`` -> ``QuantizeLinear`` (FLOAT8E4M3FN, zero point 0)."""
    return quantize(x, scale)


def dequantize_fp8(q: Any, scale: Any, out_dtype: Any) -> Any:
    """``recfx::dequantize_fp8(q, scale, out_dtype)`` -> ``DequantizeLinear`` (+ ``Cast``)."""
    return dequantize(q, scale, out_dtype)


def quantize_fp8_per_token(x: Any) -> tuple[Any, Any]:
    """``recfx::quantize_fp8_per_token(x) -> (q, scale)``: ReduceMax(Abs) / 448, Div, QuantizeLinear(scale 1)."""
    scale = per_token_scale(x)
    return op.QuantizeLinear(op.Div(_to_float(x), scale), _one(), _zero_point(), saturate=1), scale


def _static_int(d: Any, what: str) -> int:
    if not isinstance(d, int):
        raise ValueError(f"ONNX export of {what} needs a static size here, got symbolic {d}")
    return d


def _group_scales(x: Any, group_size: int) -> tuple[Any, Any, int]:
    """``x`` padded to whole groups and reshaped ``[..., G, group]``, the group scales ``[..., G]``, and K."""
    k = _static_int(x.shape[-1], "FP8 1 x G groups (the last dim)")
    g = -(-k // group_size)
    xf = _to_float(x)
    if g * group_size != k:
        pads = [0] * x.shape.rank() + [0] * (x.shape.rank() - 1) + [g * group_size - k]
        xf = op.Pad(xf, op.Constant(value_ints=pads))
    grouped = op.Reshape(xf, op.Constant(value_ints=[0] * (x.shape.rank() - 1) + [g, group_size]), allowzero=0)
    amax = op.ReduceMax(op.Abs(grouped), op.Constant(value_ints=[-1]), keepdims=0)  # (..., G)
    floor = op.Constant(value=ir.tensor(AMAX_FLOOR, dtype=FLOAT, name="fp8_amax_floor"))
    fmax = op.Constant(value=ir.tensor(E4M3_MAX, dtype=FLOAT, name="fp8_max"))
    return grouped, op.Div(op.Max(amax, floor), fmax), k


def quantize_fp8_groups(x: Any, group_size: int) -> tuple[Any, Any]:
    """``recfx::quantize_fp8_groups(x, G) -> (q, scale)``: per 1 x G group scales, ``Q(x / s, 1)``."""
    grouped, scale, k = _group_scales(x, group_size)
    scaled = op.Div(grouped, op.Unsqueeze(scale, op.Constant(value_ints=[-1])))  # (..., G, group)
    flat = op.Reshape(scaled, op.Constant(value_ints=[0] * (x.shape.rank() - 1) + [-1]), allowzero=0)
    return op.QuantizeLinear(_trim_last(flat, k, x.shape.rank()), _one(), _zero_point(), saturate=1), scale


def _trim_last(x: Any, k: int, rank: int) -> Any:
    return op.Slice(x, op.Constant(value_ints=[0]), op.Constant(value_ints=[k]), op.Constant(value_ints=[rank - 1]))


def _expand_blocks(scale: Any, shape: list[Any], blocks: dict[int, int]) -> Any:
    """Repeat dim ``d`` of ``scale`` ``blocks[d]`` times and trim it to ``shape[d]``, for each blocked dim ``d``.

    The blocked dims must be static, and so must the dims after them (only the last dim of an activation may
    follow dynamic ones).
    """
    rank = len(shape)
    dims = list(scale.shape) if scale.shape is not None else [None] * rank
    for d, b in sorted(blocks.items()):
        n = _static_int(shape[d], "FP8 block scales")
        tail = [_static_int(t, "FP8 block scales") for t in dims[d + 1:]]
        s = op.Tile(op.Unsqueeze(scale, op.Constant(value_ints=[d + 1])),
                    op.Constant(value_ints=[1] * (d + 1) + [b] + [1] * len(tail)))  # (..., S_d, b, ...)
        s = op.Reshape(s, op.Constant(value_ints=[0] * d + [-1] + tail), allowzero=0)  # (..., S_d * b, ...)
        scale = op.Slice(s, op.Constant(value_ints=[0]), op.Constant(value_ints=[n]), op.Constant(value_ints=[d]))
        dims[d] = n
    return scale


def dequantize_fp8_blocks(q: Any, scale: Any, block_size: list[int], out_dtype: Any,
                          shape: list[Any] | None = None) -> Any:
    """``recfx::dequantize_fp8_blocks``: block-scaled ``DequantizeLinear``.

    A static scale maps onto opset 21's blocked ``DequantizeLinear`` along the last axis; B x B weight blocks first
    repeat the scale along the other axis (folded into an initializer by the optimizer). Dynamic scales (1 x G
    activation groups) are applied with an explicit ``Mul`` after ``DequantizeLinear(q, 1)``. ``shape`` is ``q``'s
    shape when the tracer does not know it.
    """
    shape = shape if shape is not None else list(q.shape)
    if _is_static(scale) and len(block_size) <= 2 and all(isinstance(d, int) for d in shape):
        full = _expand_blocks(scale, shape, {len(shape) - 2: block_size[0]}) if len(block_size) == 2 else scale
        zp_shape = [*shape[:-1], -(-shape[-1] // block_size[-1])]
        zp = op.Constant(value=ir.tensor(np.zeros(zp_shape, dtype=ml_dtypes.float8_e4m3fn), name="fp8_zero_point"))
        return _cast(op.DequantizeLinear(q, full, zp, axis=len(shape) - 1, block_size=block_size[-1]), out_dtype)
    lead = len(shape) - len(block_size)
    full = _expand_blocks(scale, shape, {lead + i: b for i, b in enumerate(block_size)})
    return _cast(op.Mul(op.DequantizeLinear(q, _one(), _zero_point()), full), out_dtype)


def _weight(w_q: Any, w_scale: Any) -> Any:
    """The dequantized weight transposed for ``MatMul``: ``Transpose(DQ(w_q [N, K], s_w, axis=0))`` -> ``[K, N]``."""
    return op.Transpose(dequantize(w_q, w_scale), perm=[1, 0])


def _epilogue(acc: Any, bias: Any, out_dtype: Any, x: Any) -> Any:
    if bias is not None:
        acc = op.Add(acc, _to_float(bias))
    return _cast(acc, out_dtype if out_dtype is not None else x.dtype)


def fp8_linear(x: Any, w_q: Any, w_scale: Any, bias: Any = None, x_scale: Any = None, out_dtype: Any = None) -> Any:
    """``recfx::fp8_linear`` -> Q/DQ on both ``MatMul`` inputs, bias added after (never between GEMM and bias).

    Static activations (``x_scale`` given): ``DQ(Q(x, s_x))``. Dynamic per-token: ``Q(x / s_x, 1)`` before the GEMM
    and ``* s_x`` after it (the epilogue), so that the Q/DQ scales stay static initializers.
    """
    w = _weight(w_q, w_scale)
    if x_scale is not None:
        xd = dequantize(quantize(x, x_scale), x_scale, shape=list(x.shape))
        return _epilogue(op.MatMul(xd, w), bias, out_dtype, x)
    s_x = per_token_scale(x)
    xq = op.QuantizeLinear(op.Div(_to_float(x), s_x), _one(), _zero_point(), saturate=1)
    acc = op.Mul(op.MatMul(op.DequantizeLinear(xq, _one(), _zero_point()), w), s_x)
    return _epilogue(acc, bias, out_dtype, x)


def fp8_linear_blocks(x: Any, w_q: Any, w_scale: Any, bias: Any = None, block_size: int = 128,
                      out_dtype: Any = None) -> Any:
    """``recfx::fp8_linear_blocks``: 1 x B activation groups (dynamic), B x B weight blocks or 1 x B weight groups
    (static), one MatMul."""
    q, s_x = quantize_fp8_groups(x, block_size)
    xd = dequantize_fp8_blocks(q, s_x, [block_size], None, shape=list(x.shape))
    rows = weight_block_rows(_static_int(w_q.shape[0], "the FP8 weight's N"),
                             _static_int(w_scale.shape[0], "the FP8 weight scale's rows"), block_size)
    w = op.Transpose(dequantize_fp8_blocks(w_q, w_scale, [rows, block_size], None), perm=[1, 0])
    return _epilogue(op.MatMul(xd, w), bias, out_dtype, x)
