"""The FP8 vocabulary, defined once: granularities (how scales are shared), FP8 storage dtypes, and the FP8 ops.

Every pass, backend, exporter and report looks these up instead of comparing strings or op names.

==================  ==========  ============================  =========================================
granularity         role        scale shape                   how the scale is found
==================  ==========  ============================  =========================================
per_channel         weight      ``[N, 1]``                    offline, from the weight
per_tensor          weight      ``[]``                        offline, from the weight
block               weight      ``[ceil(N/B), ceil(K/B)]``    offline, one per B x B block
dynamic_per_token   activation  ``[..., 1]``                  at run time, one per row
static_per_tensor   activation  ``[]``                        from calibration data
block               activation  ``[..., ceil(K/B)]``          at run time, one per 1 x B group
==================  ==========  ============================  =========================================

Example:
    >>> activation_mode("static_per_tensor").calibrated
    True
    >>> weight_granularity("block").blocked
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class Granularity:
    """One way of sharing FP8 scales.

    Attributes:
        name: the config value (``QuantConfig.weight`` / ``.activation``).
        role: ``weight`` or ``activation``.
        scale: the scale's shape, for docs and messages.
        short: the report's column label.
        blocked: scales per 1 x B group / B x B block (``QuantConfig.block_size`` applies; weights and activations
            are blocked together).
        calibrated: static scales chosen from calibration data.
        dynamic: scales computed at run time.
    """

    name: str
    role: str
    scale: str
    short: str
    blocked: bool = False
    calibrated: bool = False
    dynamic: bool = False


PER_CHANNEL = Granularity("per_channel", "weight", "[N, 1]", "channel")
PER_TENSOR = Granularity("per_tensor", "weight", "[]", "tensor")
WEIGHT_BLOCKS = Granularity("block", "weight", "[ceil(N/B), ceil(K/B)]", "block", blocked=True)
PER_TOKEN = Granularity("dynamic_per_token", "activation", "[..., 1]", "token", dynamic=True)
STATIC_PER_TENSOR = Granularity("static_per_tensor", "activation", "[]", "static", calibrated=True)
ACTIVATION_GROUPS = Granularity("block", "activation", "[..., ceil(K/B)]", "block", blocked=True, dynamic=True)

#: Weight granularities and activation modes by config name.
WEIGHT_GRANULARITIES: dict[str, Granularity] = {g.name: g for g in (PER_CHANNEL, PER_TENSOR, WEIGHT_BLOCKS)}
ACTIVATION_MODES: dict[str, Granularity] = {g.name: g for g in (PER_TOKEN, STATIC_PER_TENSOR, ACTIVATION_GROUPS)}

#: dtypes of FP8 tensors (any of them means a graph is quantized already); recfx itself stores E4M3 (fn).
FP8_STORAGE_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)

#: The ``recfx::`` FP8 ops: quantize / dequantize and the FP8 GEMMs.
FP8_OP_NAMES = ("quantize_fp8", "dequantize_fp8", "quantize_fp8_per_token", "quantize_fp8_groups",
                "dequantize_fp8_blocks", "fp8_linear", "fp8_linear_blocks")


def _lookup(table: dict[str, Granularity], name: str, what: str) -> Granularity:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(table)}")
    return table[name]


def weight_granularity(name: str) -> Granularity:
    """The weight granularity called ``name`` (``ValueError`` listing the known ones otherwise)."""
    return _lookup(WEIGHT_GRANULARITIES, name, "FP8 weight granularity")


def activation_mode(name: str) -> Granularity:
    """The activation mode called ``name`` (``ValueError`` listing the known ones otherwise)."""
    return _lookup(ACTIVATION_MODES, name, "FP8 activation mode")


def is_fp8_op(target: Any) -> bool:
    """Whether ``target`` (a node's target) is one of the ``recfx::`` FP8 ops.

    Example:
        >>> import recfx
        >>> is_fp8_op(torch.ops.recfx.fp8_linear.default), is_fp8_op(torch.ops.aten.linear.default)
        (True, False)
    """
    if not isinstance(target, torch._ops.OpOverload):
        return False
    namespace, _, name = target.name().partition("::")
    return namespace == "recfx" and name.split(".")[0] in FP8_OP_NAMES


__all__ = ["ACTIVATION_GROUPS", "ACTIVATION_MODES", "FP8_OP_NAMES", "FP8_STORAGE_DTYPES", "PER_CHANNEL", "PER_TENSOR",
           "PER_TOKEN", "STATIC_PER_TENSOR", "WEIGHT_BLOCKS", "WEIGHT_GRANULARITIES", "Granularity", "activation_mode",
           "is_fp8_op", "weight_granularity"]
