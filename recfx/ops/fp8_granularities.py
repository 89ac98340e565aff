"""The built-in FP8 granularities, each one descriptor registered with ``register_granularity``.

A new granularity is a module like this one: its scale rule, its quantize -> dequantize pair written through
``call`` (so that the same code runs eagerly and records the graph ``fp8_convert`` writes), the FP8 GEMM it folds
into, and one ``register_granularity`` call (docs/fp8.md, "Adding a granularity").

Example:
    >>> import torch
    >>> PER_CHANNEL.scales(torch.tensor([[448.0, -1.0], [2.0, 0.5]]), 128).flatten().tolist()
    [1.0, 0.004464285913854837]
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor

from recfx.ops.fp8 import block_amax, scale_from_amax
from recfx.ops.fp8_terms import (
    FP8_LINEAR,
    FP8_LINEAR_BLOCKS,
    ActivationMode,
    Call,
    WeightGranularity,
    register_granularity,
)

ops = torch.ops.recfx


def _channel_scales(w: Tensor, block_size: int) -> Tensor:
    return scale_from_amax(w.abs().amax(dim=1, keepdim=True))  # (N, 1)


def _tensor_scale(w: Tensor, block_size: int) -> Tensor:
    return scale_from_amax(w.abs().amax())  # ()


def _block_scales(w: Tensor, block_size: int) -> Tensor:
    return scale_from_amax(block_amax(w, (block_size, block_size)))  # (N/B, K/B)


def _square_blocks(block_size: Any) -> list[Any]:
    return [block_size, block_size]


def _row_groups(block_size: Any) -> list[Any]:
    return [block_size]


def _per_token(call: Call, x: Any, scale: Any, block_size: Any) -> tuple[Any, Any]:
    t = call(ops.quantize_fp8_per_token.default, x)
    return call(operator.getitem, t, 0), call(operator.getitem, t, 1)


def _static(call: Call, x: Any, scale: Any, block_size: Any) -> tuple[Any, Any]:
    return call(ops.quantize_fp8.default, x, scale), scale


def _groups(call: Call, x: Any, scale: Any, block_size: Any) -> tuple[Any, Any]:
    t = call(ops.quantize_fp8_groups.default, x, block_size)
    return call(operator.getitem, t, 0), call(operator.getitem, t, 1)


PER_CHANNEL = register_granularity(WeightGranularity(
    "per_channel", "[N, 1]", "channel", FP8_LINEAR, _channel_scales, onnx="per-axis DequantizeLinear along N"))
PER_TENSOR = register_granularity(WeightGranularity(
    "per_tensor", "[]", "tensor", FP8_LINEAR, _tensor_scale, onnx="per-tensor DequantizeLinear (a scalar scale)"))
WEIGHT_BLOCKS = register_granularity(WeightGranularity(
    "block", "[ceil(N/B), ceil(K/B)]", "block", FP8_LINEAR_BLOCKS, _block_scales, blocks=_square_blocks,
    onnx="blocked DequantizeLinear along K (block_size=B; the scale repeated B times along N)"))
PER_TOKEN = register_granularity(ActivationMode(
    "dynamic_per_token", "[..., 1]", "token", FP8_LINEAR, _per_token,
    onnx="ReduceMax(Abs) / 448 per row, QuantizeLinear(x / s, 1); s multiplies the MatMul's output"))
STATIC_PER_TENSOR = register_granularity(ActivationMode(
    "static_per_tensor", "[]", "static", FP8_LINEAR, _static, calibrated=True,
    onnx="per-tensor QuantizeLinear / DequantizeLinear with the calibrated scalar scale"))
ACTIVATION_GROUPS = register_granularity(ActivationMode(
    "block", "[..., ceil(K/B)]", "block", FP8_LINEAR_BLOCKS, _groups, blocks=_row_groups,
    onnx="per 1 x B group: QuantizeLinear(x / s, 1), DequantizeLinear, Mul by s"))

__all__ = ["ACTIVATION_GROUPS", "PER_CHANNEL", "PER_TENSOR", "PER_TOKEN", "STATIC_PER_TENSOR", "WEIGHT_BLOCKS"]
