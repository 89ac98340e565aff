"""The FP8 vocabulary, defined once: granularities (how scales are shared), the FP8 GEMMs, dtypes and op names.

A granularity is a descriptor that carries its behaviour, not a name that code branches on: how a weight's scales
are found, how a quantize -> dequantize pair is written, which FP8 GEMM the pair folds into. The GEMM says how
``fp8_lower_scaled_mm`` and TensorRT treat it. Every pass, backend, exporter and report asks these objects;
``register_granularity`` adds one (docs/fp8.md, "Adding a granularity"). The built-in granularities live in
``recfx.ops.fp8_granularities``; :func:`granularity_table` lists whatever is registered (scale shapes, GEMMs, ONNX
forms).

Example:
    >>> activation_mode("static_per_tensor").calibrated
    True
    >>> weight_granularity("block").gemm.op_name
    'fp8_linear_blocks'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from recfx.registry import Registry

#: Largest finite E4M3 value.
E4M3_MAX = 448.0
#: amax is floored here before dividing by 448, so that an all-zero tensor gets a positive scale (torchao's choice).
AMAX_FLOOR = 1e-12

#: ``call(op, *args, **kwargs)``: runs one op (:func:`EAGER`) or records it as a graph node (the passes); the
#: granularities and ``recfx.ops.fp8_rows`` emit through it, so the code that runs and the graph are one.
Call = Callable[..., Any]


def EAGER(op: Any, *args: Any, **kwargs: Any) -> Any:
    """Run the op now (the eager form of whatever emits through a :data:`Call`)."""
    return op(*args, **kwargs)


#: A GEMM's positional arguments from ``(x, w_q, w_scale, bias, x_scale, block_size)``.
GemmArguments = Callable[[Any, Any, Any, Any, Any, Any], tuple[Any, ...]]


def _op(name: str) -> Any:
    return getattr(torch.ops.recfx, name).default


#: The GPU forms ``fp8_lower_scaled_mm`` writes (``Fp8Gemm.lowering``).
LOWERINGS = ("scaled_mm", "block_mm")
#: The scale blocks ``recfx::fp8_block_mm`` takes: its GPU kernel's K step is the block, a power of two an FP8 MMA
#: reduces over.
BLOCK_SIZES = (32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class Fp8Gemm:
    """One FP8 GEMM op and how the stages after ``fp8_lower`` treat it.

    Attributes:
        op_name: the ``recfx::`` op (``fp8_linear``).
        arguments: its positional arguments from ``(x, w_q, w_scale, bias, x_scale, block_size)``.
        scaled_mm: ``None`` when ``fp8_lower_scaled_mm`` lowers it (to the form ``lowering`` names); otherwise why
            it stays the reference op (a line of the report's ``fp8_gemm`` section).
        lowering: the GPU form ``fp8_lower_scaled_mm`` writes: ``"scaled_mm"`` (aten per-token quantization +
            row-wise ``torch._scaled_mm``; the op takes ``fp8_linear``'s arguments) or ``"block_mm"`` (aten 1 x B
            group quantization + ``recfx::fp8_block_mm``; the op takes ``fp8_linear_blocks``' arguments).
        tensorrt: ``None`` when TensorRT takes it (subject to ``recfx.backends.tensorrt.partition``'s rule for the op:
            constant scales of a layout its quantize layers take); otherwise why it falls back to PyTorch.
        onnx: what its ONNX translation writes (docs).
    """

    op_name: str
    arguments: GemmArguments
    scaled_mm: str | None = None
    tensorrt: str | None = None
    onnx: str = ""
    lowering: str = "scaled_mm"

    def __post_init__(self) -> None:
        if self.lowering not in LOWERINGS:
            raise ValueError(f"Fp8Gemm {self.op_name!r}: lowering must be one of {LOWERINGS}, got {self.lowering!r}")

    @property
    def op(self) -> Any:
        """The ``OpOverload`` (``torch.ops.recfx.<op_name>.default``)."""
        return _op(self.op_name)

    def call(self, call: Call, x: Any, w_q: Any, w_scale: Any, bias: Any, x_scale: Any, block_size: Any) -> Any:
        """Run or record the GEMM (``call`` as in :data:`Call`)."""
        return call(self.op, *self.arguments(x, w_q, w_scale, bias, x_scale, block_size))


def dequantize(call: Call, q: Any, scale: Any, blocks: list[Any] | None, dtype: Any) -> Any:
    """``dequantize_fp8(q, scale, dtype)`` for a scale that broadcasts (``blocks`` None), else
    ``dequantize_fp8_blocks(q, scale, blocks, dtype)``."""
    if blocks is None:
        return call(_op("dequantize_fp8"), q, scale, dtype)
    return call(_op("dequantize_fp8_blocks"), q, scale, blocks, dtype)


def _no_blocks(block_size: Any) -> list[Any] | None:
    return None


@dataclasses.dataclass(frozen=True)
class WeightGranularity:
    """How a weight ``[N, K]`` shares its FP8 scales (``QuantConfig.weight``).

    Attributes:
        name: the config value.
        scale: the scale's shape, for docs and messages.
        short: the report's column label.
        gemm: the FP8 GEMM its linears fold into; the activation mode must name the same one.
        scales: ``(w, block_size) -> float32 scales`` of a float weight, computed offline (``scale`` shape).
        blocks: ``block_size -> dequantize_fp8_blocks' block_size`` (the extent of one scale along each dim), or
            ``None`` when the scale broadcasts to the weight (``dequantize_fp8``). It must pass ``block_size``
            through as given (``fp8_lower`` recognises it by position).
        onnx: the weight's ONNX ``DequantizeLinear`` attributes (docs).
    """

    name: str
    scale: str
    short: str
    gemm: Fp8Gemm
    scales: Callable[[Tensor, int], Tensor]
    blocks: Callable[[Any], list[Any] | None] = _no_blocks
    onnx: str = ""

    role = "weight"

    def dequantize(self, call: Call, q: Any, scale: Any, block_size: Any, dtype: Any) -> Any:
        """Run or record the dequantization of an FP8 weight."""
        return dequantize(call, q, scale, self.blocks(block_size), dtype)


@dataclasses.dataclass(frozen=True)
class ActivationMode:
    """How an activation ``[..., K]`` is quantized in front of an FP8 GEMM (``QuantConfig.activation``).

    Attributes:
        name / scale / short / gemm: as for :class:`WeightGranularity`.
        quantize: ``(call, x, scale, block_size) -> (q, scale)``: runs or records the quantization of ``x``;
            ``scale`` is the calibrated float32 ``[]`` scale when ``calibrated``, else None.
        blocks: as for :class:`WeightGranularity`, for the activation's dequantization.
        calibrated: static scales chosen from calibration data (``recfx.compile`` then needs ``calibration=``).
        onnx: the ONNX form of the quantization (docs).
    """

    name: str
    scale: str
    short: str
    gemm: Fp8Gemm
    quantize: Callable[[Call, Any, Any, Any], tuple[Any, Any]]
    blocks: Callable[[Any], list[Any] | None] = _no_blocks
    calibrated: bool = False
    onnx: str = ""

    role = "activation"

    def fake_quant(self, call: Call, x: Any, scale: Any, block_size: Any, dtype: Any) -> Any:
        """Run or record ``dequantize(quantize(x))`` in ``dtype``."""
        q, s = self.quantize(call, x, scale, block_size)
        return dequantize(call, q, s, self.blocks(block_size), dtype)


Granularity = WeightGranularity | ActivationMode
G = TypeVar("G", WeightGranularity, ActivationMode)

#: The FP8 GEMMs, weight granularities and activation modes by name.
FP8_GEMMS: Registry[Fp8Gemm] = Registry("FP8 GEMM")
WEIGHT_GRANULARITIES: Registry[WeightGranularity] = Registry("FP8 weight granularity")
ACTIVATION_MODES: Registry[ActivationMode] = Registry("FP8 activation mode")


def register_gemm(gemm: Fp8Gemm) -> Fp8Gemm:
    """Register an FP8 GEMM under its op name (``ValueError`` if taken)."""
    return FP8_GEMMS.add(gemm.op_name, gemm)


def _registry(g: Granularity) -> Registry[Any]:
    if isinstance(g, WeightGranularity):
        return WEIGHT_GRANULARITIES
    if isinstance(g, ActivationMode):
        return ACTIVATION_MODES
    raise TypeError(f"expected a WeightGranularity or an ActivationMode, got {type(g).__name__}")


def register_granularity(g: G) -> G:
    """Make ``g`` a choice of ``QuantConfig.weight`` / ``.activation`` (and of their rules, the CLI and the docs).

    Returns:
        ``g`` itself (so that a module can write ``MINE = register_granularity(WeightGranularity(...))``).

    Raises:
        ValueError: the name is taken in its role, or its GEMM is not registered (``register_gemm`` it first).

    Example:
        >>> ones = WeightGranularity("doc_ones", "[N, 1]", "ones", FP8_LINEAR, lambda w, b: torch.ones(w.shape[0], 1))
        >>> register_granularity(ones) is ones, "doc_ones" in WEIGHT_GRANULARITIES
        (True, True)
        >>> unregister_granularity(ones); "doc_ones" in WEIGHT_GRANULARITIES
        False
    """
    registered = FP8_GEMMS.get(g.gemm.op_name) if g.gemm.op_name in FP8_GEMMS else None
    if registered is not g.gemm:
        raise ValueError(f"granularity {g.name!r} folds into FP8 GEMM {g.gemm.op_name!r}, which is not a registered "
                         f"one ({', '.join(FP8_GEMMS)}); register_gemm(...) it first or use a registered Fp8Gemm")
    _registry(g).add(g.name, g)
    return g


def unregister_granularity(g: Granularity) -> None:
    """Remove ``g`` from its registry (tests and plug-ins that clean up after themselves)."""
    registry = _registry(g)
    if registry.get(g.name) is not g:
        raise ValueError(f"{g.role} granularity {g.name!r} is registered, but as another object")
    registry.remove(g.name)


def _lookup(registry: Registry[Any], name: str) -> Any:
    if name not in registry:
        raise ValueError(f"unknown {registry.kind} {name!r}; choose from {', '.join(registry)}")
    return registry.get(name)


def weight_granularity(name: str) -> WeightGranularity:
    """The weight granularity called ``name`` (``ValueError`` listing the known ones otherwise)."""
    return _lookup(WEIGHT_GRANULARITIES, name)  # type: ignore[no-any-return]


def activation_mode(name: str) -> ActivationMode:
    """The activation mode called ``name`` (``ValueError`` listing the known ones otherwise)."""
    return _lookup(ACTIVATION_MODES, name)  # type: ignore[no-any-return]


def fp8_gemm(target: Any) -> Fp8Gemm | None:
    """The registered FP8 GEMM whose op is ``target`` (a node's target), or None."""
    for name in FP8_GEMMS:
        gemm = FP8_GEMMS.get(name)
        if gemm.op is target:
            return gemm
    return None


def granularity_table() -> str:
    """The registered granularities and FP8 GEMMs as Markdown tables (docs/fp8.md holds them; a test keeps them
    equal).

    Example:
        >>> granularity_table().splitlines()[0]
        '| granularity | role | scale | FP8 GEMM | report | ONNX |'
    """
    rows = ["| granularity | role | scale | FP8 GEMM | report | ONNX |", "|---|---|---|---|---|---|"]
    for registry in (WEIGHT_GRANULARITIES, ACTIVATION_MODES):
        for name in registry:
            g = registry.get(name)
            static = " (calibrated)" if isinstance(g, ActivationMode) and g.calibrated else ""
            rows.append(f"| `{g.name}` | {g.role}{static} | `{g.scale}` | `{g.gemm.op_name}` | {g.short} | {g.onnx} |")
    rows += ["", "| FP8 GEMM | `fp8_lower_scaled_mm` (cuda-fp8) | TensorRT | ONNX |", "|---|---|---|---|"]
    for name in FP8_GEMMS:
        gemm = FP8_GEMMS.get(name)
        lowered = {"scaled_mm": "row-wise `torch._scaled_mm`",
                   "block_mm": "`recfx::fp8_block_mm` (Triton; block scales applied per K block)"}[gemm.lowering]
        rows.append(f"| `{name}` | {gemm.scaled_mm or lowered} | "
                    f"{gemm.tensorrt or 'converted (constant per-tensor / per-channel scales)'} | {gemm.onnx} |")
    return "\n".join(rows)


def _scale_arguments(x: Any, w_q: Any, w_scale: Any, bias: Any, x_scale: Any, block_size: Any) -> tuple[Any, ...]:
    return x, w_q, w_scale, bias, x_scale


def _block_arguments(x: Any, w_q: Any, w_scale: Any, bias: Any, x_scale: Any, block_size: Any) -> tuple[Any, ...]:
    return x, w_q, w_scale, bias, block_size


#: ``recfx::fp8_linear``: per-tensor / per-channel weights, per-token or calibrated per-tensor activations.
FP8_LINEAR = register_gemm(Fp8Gemm(
    "fp8_linear", _scale_arguments,
    onnx="QuantizeLinear / DequantizeLinear on both MatMul inputs; a per-token scale is applied after the MatMul"))
#: ``recfx::fp8_linear_blocks``: B x B weight blocks (or 1 x B weight groups) with 1 x B activation groups.
FP8_LINEAR_BLOCKS = register_gemm(Fp8Gemm(
    "fp8_linear_blocks", _block_arguments, lowering="block_mm",
    tensorrt="block-scaled GEMM: TensorRT's FP8 quantize layers take per-tensor or per-channel scales",
    onnx="blocked DequantizeLinear of the weight along K (block_size=B); activation groups as Mul after "
         "DequantizeLinear"))

#: dtypes of FP8 tensors (any of them means a graph is quantized already); recfx itself stores E4M3 (fn).
FP8_STORAGE_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)

#: The ``recfx::`` FP8 ops: quantize / dequantize and the FP8 GEMMs.
FP8_QDQ_OP_NAMES = ("quantize_fp8", "dequantize_fp8", "quantize_fp8_per_token", "quantize_fp8_groups",
                    "dequantize_fp8_blocks")
#: The built-in ``recfx::`` FP8 ops (the Q/DQ ops and the GEMMs registered here); :func:`is_fp8_op` also knows the
#: GEMMs registered later with :func:`register_gemm`.
FP8_OP_NAMES = (*FP8_QDQ_OP_NAMES, "fp8_linear", "fp8_linear_blocks")


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
    op = name.split(".")[0]
    return namespace == "recfx" and (op in FP8_QDQ_OP_NAMES or op in FP8_GEMMS)


__all__ = ["ACTIVATION_MODES", "AMAX_FLOOR", "BLOCK_SIZES", "E4M3_MAX", "EAGER", "FP8_GEMMS", "FP8_LINEAR",
           "FP8_LINEAR_BLOCKS", "FP8_OP_NAMES", "FP8_QDQ_OP_NAMES", "FP8_STORAGE_DTYPES", "ActivationMode", "Call",
           "Fp8Gemm", "Granularity", "WeightGranularity", "activation_mode", "dequantize", "fp8_gemm",
           "granularity_table", "is_fp8_op", "register_gemm", "register_granularity", "unregister_granularity",
           "weight_granularity"]
