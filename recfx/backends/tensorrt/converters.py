"""Torch-TensorRT converters for recfx's FP8 ops, keyed on the ``OpOverload`` (needs TensorRT; imported by the
``trt`` backends only).

* ``recfx::quantize_fp8`` -> ``IQuantizeLayer`` with FP8 output; ``recfx::dequantize_fp8`` -> ``IDequantizeLayer``
  then a cast to the op's output type. Like the ops, both compute in float32 (input cast up, float32 scales).
  Scales are build-time constants: a scalar, or a 1-D vector and the layer's ``axis``.
* ``recfx::fp8_linear`` -> Q/DQ on both operands of one ``IMatrixMultiplyLayer`` (TensorRT fuses the pattern into
  one FP8 GEMM): the weight is an exact float constant quantized with scale 1 (TensorRT folds it into FP8 weights)
  then dequantized per output channel; a static activation scale quantizes the input directly; a dynamic per-token
  scale (``x_scale=None``) is computed in the network (``max|x| / 448`` per row), the row is divided by it, quantized
  with scale 1, and the scale multiplies the GEMM's output rows, as in the ONNX translation. Scales, the dequantized
  operands, the accumulation and the epilogue (row scale, bias) are float32, as in the op; the result is cast to
  the op's ``out_dtype``.

Networks are strongly typed (Torch-TensorRT's default): every tensor's type follows from the layers above.
Which nodes these converters take is decided by ``recfx.backends.tensorrt.partition.RULES`` (their
``capability_validator``); the rest falls back to PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorrt as trt
import torch
from torch.fx import Node
from torch.fx.node import Argument, Target
from torch_tensorrt.dynamo._settings import CompilationSettings
from torch_tensorrt.dynamo.conversion._ConversionContext import ConversionContext
from torch_tensorrt.dynamo.conversion._ConverterRegistry import dynamo_tensorrt_converter
from torch_tensorrt.dynamo.conversion.converter_utils import get_trt_tensor, set_layer_name

from recfx.backends.tensorrt.partition import RULES, scale_axis
from recfx.ops.fp8 import AMAX_FLOOR, E4M3_MAX

#: torch dtype -> TensorRT type of the tensors these converters create.
TRT_TYPES: dict[torch.dtype, trt.DataType] = {torch.float32: trt.float32, torch.float16: trt.float16,
                                               torch.bfloat16: trt.bfloat16}


def _validator(op: object) -> Callable[[Node, CompilationSettings], bool]:
    rule = RULES[op]

    def validate(node: Node, settings: CompilationSettings) -> bool:
        return rule(node) is None

    return validate


def _node_dtype(ctx: ConversionContext, index: int) -> torch.dtype:
    node = ctx.current_node
    arg = node.args[index] if node is not None and len(node.args) > index else None
    val = arg.meta.get("val") if isinstance(arg, Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else torch.float32


def _scale(ctx: ConversionContext, scale: Argument, rank: int, dtype: torch.dtype,
           name: str) -> tuple[trt.ITensor, int]:
    """A constant scale as TensorRT wants it (scalar, or 1-D with its axis), in ``dtype``; returns (tensor, axis)."""
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"{name}: the scale must be a constant tensor, got {type(scale).__name__}")
    axis = scale_axis(tuple(scale.shape), rank)
    if axis is None:
        raise ValueError(f"{name}: scale {list(scale.shape)} is neither per-tensor nor per-channel")
    values = scale.detach().to(dtype).reshape(()) if axis < 0 else scale.detach().to(dtype).reshape(-1)
    return get_trt_tensor(ctx, values, f"{name}_scale", min_rank=0), max(axis, 0)


def _float32(ctx: ConversionContext, x: trt.ITensor) -> trt.ITensor:
    return x if x.dtype == trt.float32 else ctx.net.add_cast(x, trt.float32).get_output(0)


def quantize(ctx: ConversionContext, x: trt.ITensor, scale: trt.ITensor, axis: int, name: str) -> trt.ITensor:
    layer = ctx.net.add_quantize(x, scale, trt.fp8)
    layer.axis = axis
    set_layer_name(layer, "recfx::quantize_fp8", name)
    return layer.get_output(0)


def dequantize(ctx: ConversionContext, q: trt.ITensor, scale: trt.ITensor, axis: int, out: torch.dtype,
               name: str) -> trt.ITensor:
    layer = ctx.net.add_dequantize(q, scale, TRT_TYPES[out])
    layer.axis = axis
    set_layer_name(layer, "recfx::dequantize_fp8", name)
    return layer.get_output(0)


@dynamo_tensorrt_converter(torch.ops.recfx.quantize_fp8.default, supports_dynamic_shapes=True,
                           capability_validator=_validator(torch.ops.recfx.quantize_fp8.default))
def convert_quantize_fp8(ctx: ConversionContext, target: Target, args: tuple[Argument, ...],
                         kwargs: dict[str, Argument], name: str) -> trt.ITensor:
    x = _float32(ctx, get_trt_tensor(ctx, args[0], f"{name}_x"))
    scale, axis = _scale(ctx, args[1], len(x.shape), torch.float32, name)
    return quantize(ctx, x, scale, axis, name)


@dynamo_tensorrt_converter(torch.ops.recfx.dequantize_fp8.default, supports_dynamic_shapes=True,
                           capability_validator=_validator(torch.ops.recfx.dequantize_fp8.default))
def convert_dequantize_fp8(ctx: ConversionContext, target: Target, args: tuple[Argument, ...],
                           kwargs: dict[str, Argument], name: str) -> trt.ITensor:
    out_dtype = args[2] if len(args) > 2 else kwargs["out_dtype"]
    assert isinstance(out_dtype, torch.dtype), "dequantize_rule admits constant dtypes only"
    q = get_trt_tensor(ctx, args[0], f"{name}_q")
    scale, axis = _scale(ctx, args[1], len(q.shape), torch.float32, name)
    y = dequantize(ctx, q, scale, axis, torch.float32, name)
    return y if out_dtype == torch.float32 else ctx.net.add_cast(y, TRT_TYPES[out_dtype]).get_output(0)


def _elementwise(ctx: ConversionContext, a: trt.ITensor, b: trt.ITensor, op: trt.ElementWiseOperation,
                 name: str) -> trt.ITensor:
    layer = ctx.net.add_elementwise(a, b, op)
    set_layer_name(layer, "recfx::fp8_linear", name)
    return layer.get_output(0)


def _constant(ctx: ConversionContext, value: float, dtype: torch.dtype, rank: int, name: str) -> trt.ITensor:
    return get_trt_tensor(ctx, torch.full((1,) * rank, value, dtype=dtype), name, min_rank=rank)


def _per_token(ctx: ConversionContext, x: trt.ITensor, dtype: torch.dtype,
               name: str) -> tuple[trt.ITensor, trt.ITensor]:
    """``(x / s, s)`` with ``s = max(max|x|, floor) / 448`` per row (last dim reduced, kept as size 1)."""
    rank = len(x.shape)
    absx = ctx.net.add_unary(x, trt.UnaryOperation.ABS).get_output(0)
    amax = ctx.net.add_reduce(absx, trt.ReduceOperation.MAX, 1 << (rank - 1), True).get_output(0)
    floor = _constant(ctx, AMAX_FLOOR, dtype, rank, f"{name}_amax_floor")
    amax = _elementwise(ctx, amax, floor, trt.ElementWiseOperation.MAX, f"{name}_amax")
    scale = _elementwise(ctx, amax, _constant(ctx, E4M3_MAX, dtype, rank, f"{name}_e4m3_max"),
                         trt.ElementWiseOperation.DIV, f"{name}_scale")
    return _elementwise(ctx, x, scale, trt.ElementWiseOperation.DIV, f"{name}_scaled"), scale


@dynamo_tensorrt_converter(torch.ops.recfx.fp8_linear.default, supports_dynamic_shapes=True,
                           capability_validator=_validator(torch.ops.recfx.fp8_linear.default))
def convert_fp8_linear(ctx: ConversionContext, target: Target, args: tuple[Argument, ...],
                       kwargs: dict[str, Argument], name: str) -> trt.ITensor:
    x_arg, w_q, w_scale = args[0], args[1], args[2]
    bias = _get(args, kwargs, 3, "bias")
    x_scale = _get(args, kwargs, 4, "x_scale")
    out_dtype = _get(args, kwargs, 5, "out_dtype") or _node_dtype(ctx, 0)
    assert isinstance(w_q, torch.Tensor) and isinstance(out_dtype, torch.dtype), "fp8_linear_rule admits these only"
    # Scales, dequantized operands, accumulation and epilogue in float32 (the op's own semantics), then out_dtype.
    f32 = torch.float32
    x = _float32(ctx, get_trt_tensor(ctx, x_arg, f"{name}_x"))
    rank = len(x.shape)
    one = get_trt_tensor(ctx, torch.ones((), dtype=f32), f"{name}_one", min_rank=0)
    row_scale = None
    if x_scale is None:
        x, row_scale = _per_token(ctx, x, f32, name)
        x_dq = dequantize(ctx, quantize(ctx, x, one, 0, f"{name}_xq"), one, 0, f32, f"{name}_xdq")
    else:
        s_x, _ = _scale(ctx, x_scale, rank, f32, f"{name}_x")
        x_dq = dequantize(ctx, quantize(ctx, x, s_x, 0, f"{name}_xq"), s_x, 0, f32, f"{name}_xdq")
    # The FP8 weight as exact float values; Q with scale 1 is folded into FP8 weights at build time.
    w = get_trt_tensor(ctx, w_q.detach().to(f32), f"{name}_w")
    s_w, axis = _scale(ctx, w_scale, 2, f32, f"{name}_w")
    w_dq = dequantize(ctx, quantize(ctx, w, one, 0, f"{name}_wq"), s_w, axis, f32, f"{name}_wdq")
    if rank > 2:  # broadcast [N, K] against [..., M, K]
        shuffle = ctx.net.add_shuffle(w_dq)
        shuffle.reshape_dims = trt.Dims([1] * (rank - 2) + list(w_q.shape))
        w_dq = shuffle.get_output(0)
    mm = ctx.net.add_matrix_multiply(x_dq, trt.MatrixOperation.NONE, w_dq, trt.MatrixOperation.TRANSPOSE)
    set_layer_name(mm, target, f"{name}_gemm")
    y = mm.get_output(0)
    if row_scale is not None:
        y = _elementwise(ctx, y, row_scale, trt.ElementWiseOperation.PROD, f"{name}_row_scale")
    if bias is not None:
        b = get_trt_tensor(ctx, bias, f"{name}_bias", dtype=f32, min_rank=rank)
        y = _elementwise(ctx, y, b, trt.ElementWiseOperation.SUM, f"{name}_bias_add")
    if out_dtype != f32:
        y = ctx.net.add_cast(y, TRT_TYPES[out_dtype]).get_output(0)
    return y


def _get(args: Sequence[Argument], kwargs: dict[str, Argument], index: int, key: str) -> Argument:
    return args[index] if len(args) > index else kwargs.get(key)
