"""Which nodes of the final graph TensorRT takes and which fall back to PyTorch, and why: a plain function.

Torch-TensorRT's partitioner asks its converter registry node by node; recfx's own converters add conditions
(constant scales, scale layouts TensorRT's quantize layers take, dtypes TensorRT has). This module states those
conditions once, as :data:`RULES` keyed on the ``OpOverload``: the converters' ``capability_validator`` calls them,
and :func:`plan_partition` uses them (with a registry query passed in) to say before the build what will fall back,
so that the compile report lists it and ``require_full_graph`` can refuse it.

Example:
    >>> import torch
    >>> gm = torch.fx.symbolic_trace(torch.nn.ReLU())
    >>> plan = plan_partition(gm, lambda node: True)
    >>> plan.fallback
    ()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from recfx.errors import RecfxError
from recfx.ops.fp8_terms import fp8_gemm

#: Float dtypes a TensorRT network computes in (no float64).
TRT_FLOAT_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})
#: Node kinds that are not computation (inputs, constants, outputs).
_STRUCTURAL = frozenset({"placeholder", "get_attr", "output"})

Rule = Callable[[Node], "str | None"]


class TensorRTFallbackError(RecfxError, ValueError):
    """``backend_options={"require_full_graph": True}`` and some nodes would run in PyTorch."""


@dataclasses.dataclass(frozen=True)
class NodeDecision:
    """Where one node runs: ``reason`` says why it falls back (empty when TensorRT takes it)."""

    node: str
    target: str
    to_trt: bool
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class PartitionPlan:
    """The decision for every computing node, in graph order."""

    decisions: tuple[NodeDecision, ...]

    @property
    def fallback(self) -> tuple[NodeDecision, ...]:
        return tuple(d for d in self.decisions if not d.to_trt)

    def to_dict(self) -> dict[str, object]:
        return {"trt_nodes": sum(d.to_trt for d in self.decisions),
                "fallback": [dataclasses.asdict(d) for d in self.fallback]}

    def render(self) -> str:
        lines = [f"TensorRT takes {len(self.decisions) - len(self.fallback)} of {len(self.decisions)} nodes"]
        lines += [f"  falls back: {d.node} ({d.target}): {d.reason}" for d in self.fallback]
        return "\n".join(lines)

    def check_full_graph(self) -> None:
        """Raise when any node would fall back (``require_full_graph``).

        Raises:
            TensorRTFallbackError: names every falling-back node and why.
        """
        if self.fallback:
            listing = "; ".join(f"{d.node} ({d.target}): {d.reason}" for d in self.fallback)
            raise TensorRTFallbackError(
                f"require_full_graph: {len(self.fallback)} node(s) would run in PyTorch, not TensorRT: {listing}. "
                "Remove require_full_graph to let them fall back, or change the model so they are not needed.")


def _dtype(node: object) -> torch.dtype | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


def _shape(node: object) -> tuple[int, ...] | None:
    val = node.meta.get("val") if isinstance(node, Node) else None
    return tuple(int(d) for d in val.shape) if isinstance(val, torch.Tensor) else None


def _is_constant(node: object) -> bool:
    return isinstance(node, Node) and node.op == "get_attr"


def scale_axis(scale_shape: tuple[int, ...], rank: int) -> int | None:
    """The axis of a per-channel scale broadcast against a rank-``rank`` tensor, ``-1`` for per-tensor, ``None``
    for a layout TensorRT's quantize layers do not take (more than one dim above 1: blocked or 2-D scales).

    >>> scale_axis((), 3), scale_axis((16, 1), 2), scale_axis((4, 4), 2)
    (-1, 0, None)
    """
    big = [i for i, d in enumerate(scale_shape) if d != 1]
    if not big:
        return -1
    if len(big) > 1 or len(scale_shape) > rank:
        return None
    return rank - len(scale_shape) + big[0]


def _scale_problem(scale: object, data: object, what: str) -> str | None:
    if not _is_constant(scale):
        return f"{what} scale is computed at run time; TensorRT's quantize layers need a constant scale"
    s, x = _shape(scale), _shape(data)
    if s is None or x is None:
        return f"{what}: shapes unknown (no meta['val'])"
    if scale_axis(s, len(x)) is None:
        return f"{what} scale {list(s)} is neither per-tensor nor per-channel (TensorRT takes those two)"
    return None


def _float_problem(dtype: torch.dtype | None, what: str) -> str | None:
    if dtype not in TRT_FLOAT_DTYPES:
        return f"{what} is {dtype}; TensorRT computes in float32 / float16 / bfloat16"
    return None


def quantize_rule(node: Node) -> str | None:
    """``recfx::quantize_fp8(x, scale)``: constant per-tensor or per-channel scale, x in a TensorRT float type."""
    x, scale = node.args[0], node.args[1]
    return _float_problem(_dtype(x), "input") or _scale_problem(scale, x, "quantize")


def dequantize_rule(node: Node) -> str | None:
    """``recfx::dequantize_fp8(q, scale, out_dtype)``: constant scale, a TensorRT float output type."""
    q, scale = node.args[0], node.args[1]
    out_dtype = node.args[2] if len(node.args) > 2 else node.kwargs.get("out_dtype")
    if not isinstance(out_dtype, torch.dtype):
        return "out_dtype is not a constant dtype"
    return _float_problem(out_dtype, "out_dtype") or _scale_problem(scale, q, "dequantize")


def _arg(node: Node, index: int, name: str) -> object:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def fp8_linear_rule(node: Node) -> str | None:
    """``recfx::fp8_linear``: constant FP8 weight with a per-tensor / per-output-channel scale, constant static
    activation scale when there is one (dynamic per-token scales are computed in the network), float activations."""
    x, w_q, w_scale = node.args[0], node.args[1], node.args[2]
    x_scale = _arg(node, 4, "x_scale")
    out_dtype = _arg(node, 5, "out_dtype") or _dtype(x)
    if not _is_constant(w_q):
        return "the FP8 weight is not a constant"
    problem = _float_problem(_dtype(x), "input") or _float_problem(out_dtype, "out_dtype")  # type: ignore[arg-type]
    problem = problem or _scale_problem(w_scale, w_q, "weight")
    if problem is None and x_scale is not None:
        problem = _scale_problem(x_scale, x, "activation")
    return problem


def ksa_rule(node: Node) -> str | None:
    """``recfx::ksa_attention``: the plugin takes float32 / float16 / bfloat16 q, k, v of rank 4."""
    q = node.args[0]
    shape = _shape(q)
    if shape is None or len(shape) != 4:
        return "q is not a rank-4 (B, L, H, D) tensor with known shape"
    return _float_problem(_dtype(q), "q")


#: recfx ops with a TensorRT converter or plugin, and the condition each puts on a node (``None``: accepted).
RULES: dict[object, Rule] = {
    torch.ops.recfx.quantize_fp8.default: quantize_rule,
    torch.ops.recfx.dequantize_fp8.default: dequantize_rule,
    torch.ops.recfx.fp8_linear.default: fp8_linear_rule,
    torch.ops.recfx.ksa_attention.default: ksa_rule,
}


def decide(node: Node, has_converter: Callable[[Node], bool]) -> NodeDecision:
    """Where ``node`` runs. ``has_converter`` asks Torch-TensorRT's converter registry (``node in
    DYNAMO_CONVERTERS``) for ops recfx has no rule for."""
    target = str(node.target)
    rule = RULES.get(node.target)
    gemm = fp8_gemm(node.target)
    if gemm is not None and gemm.tensorrt is not None:  # the GEMM's descriptor says TensorRT cannot take it
        return NodeDecision(node.name, target, False, gemm.tensorrt)
    if rule is not None:
        reason = rule(node)
        return NodeDecision(node.name, target, reason is None, reason or "")
    if isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "recfx":
        return NodeDecision(node.name, target, False, "recfx op without a TensorRT converter")
    if _dtype(node) == torch.float64:
        return NodeDecision(node.name, target, False, "float64: TensorRT has no double precision")
    if not has_converter(node):
        return NodeDecision(node.name, target, False, "no TensorRT converter for this op")
    return NodeDecision(node.name, target, True)


def plan_partition(gm: GraphModule, has_converter: Callable[[Node], bool]) -> PartitionPlan:
    """The decision for every computing node of ``gm`` (placeholders, constants and the output are skipped)."""
    return PartitionPlan(tuple(decide(n, has_converter) for n in gm.graph.nodes if n.op not in _STRUCTURAL))
