"""What the FP8 passes hand to each other: per-layer plans in node meta, observers, and the pipeline state."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.analysis.stats import DistStats, RunningStats
from recfx.ops.fp8_terms import activation_mode
from recfx.passes.base import PassContext
from recfx.passes.quant.config import QuantConfig
from recfx.passes.quant.policy import Decision

#: ``node.meta`` key of an annotated linear's :class:`LayerPlan`.
PLAN = "recfx_fp8"
#: Prefix of the observer submodules ``fp8_prepare`` adds (``call_module`` nodes).
OBSERVER_PREFIX = "_fp8_observer_"
#: Prefix of the buffers ``fp8_convert`` adds (FP8 weights, scales).
BUFFER_PREFIX = "_fp8_"


@dataclasses.dataclass
class LayerPlan:
    """How one linear node is quantized (written by ``fp8_annotate``, completed by calibration).

    Attributes:
        name: the layer's report name: its module path, plus ``#i`` for the i-th call of a module called repeatedly.
        module_path / kind: from the policy.
        weight / activation / block_size: the granularity.
        observer: the observer submodule watching its activation input (set by ``fp8_prepare``).
        x_amax: the calibrated activation amax (static mode).
    """

    name: str
    module_path: str
    kind: str
    weight: str
    activation: str
    block_size: int
    observer: str = ""
    x_amax: float | None = None

    @property
    def static(self) -> bool:
        return activation_mode(self.activation).calibrated


class NonFiniteActivation(ValueError):
    """An observer saw NaN or Inf."""

    def __init__(self, layers: list[str], what: str) -> None:
        super().__init__(f"{what} in the activation feeding {', '.join(layers)}")
        self.layers = layers
        self.what = what


class ActivationObserver(torch.nn.Module):
    """Identity that records the statistics of the activation tensor feeding one or more quantized linears.

    Raises :class:`NonFiniteActivation` (naming the layers) when the tensor holds NaN or Inf.
    """

    def __init__(self, layers: list[str]) -> None:
        super().__init__()
        self.layers = layers
        self.stats = RunningStats()
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            raise NonFiniteActivation(self.layers, "NaN" if bool(torch.isnan(x).any()) else "Inf")
        self.stats.update(x)
        self.batches += 1
        return x

    def extra_repr(self) -> str:
        return f"layers={self.layers}, batches={self.batches}"


@dataclasses.dataclass
class LayerResult:
    """One quantized layer's line in the FP8 report."""

    name: str
    module_path: str
    kind: str
    weight: str
    activation: str
    sqnr_db: float | None = None
    weight_stats: DistStats | None = None
    activation_stats: DistStats | None = None
    x_scale: float | None = None


@dataclasses.dataclass
class Fp8State:
    """Shared by the passes of one FP8 pipeline through ``ctx.fp8_state``."""

    config: QuantConfig
    decisions: list[Decision] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    eval_data: list[tuple[torch.Tensor, ...]] = dataclasses.field(default_factory=list)
    data_source: str = ""
    calibrated_batches: int = 0
    layers: dict[str, LayerResult] = dataclasses.field(default_factory=dict)
    sensitivity: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    auto_excluded: list[str] = dataclasses.field(default_factory=list)
    auto_exclude_cosine: float | None = None
    #: FP8 copies of weights made by ``fp8_evaluate``'s probe, by (buffer, granularity, block size): (the float
    #: tensor they were made from, w_q, w_scale); ``fp8_convert`` takes them instead of quantizing again, then clears
    weights: dict[tuple[str, str, int | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = dataclasses.field(
        default_factory=dict)

    @classmethod
    def of(cls, ctx: PassContext) -> Fp8State:
        """The pipeline's state (created on first use from ``ctx.quant``)."""
        if ctx.fp8_state is None:
            ctx.fp8_state = cls(resolve_config(ctx.quant))
        return ctx.fp8_state


def resolve_config(quant: Any) -> QuantConfig:
    """The user's ``QuantConfig`` or the default one.

    Raises:
        TypeError: ``quant`` is something else.
    """
    if quant is None:
        return QuantConfig()
    if not isinstance(quant, QuantConfig):
        raise TypeError(f"quant must be a recfx.QuantConfig, got {type(quant).__name__}; build one with "
                        "recfx.QuantConfig(...) or recfx.QuantConfig.from_dict({...})")
    return quant


def node_arg(node: Node, i: int) -> Node:
    """``node.args[i]``, which must be a graph node (the activation and weight of a linear always are)."""
    a = node.args[i]
    assert isinstance(a, Node), f"{node.name}: argument {i} is {a!r}, expected a graph node"
    return a


def plans(gm: GraphModule) -> list[tuple[Node, LayerPlan]]:
    """The annotated linear nodes with their plans, in graph order."""
    return [(n, n.meta[PLAN]) for n in gm.graph.nodes if PLAN in n.meta]


def observers(gm: GraphModule) -> dict[str, ActivationObserver]:
    return {name: m for name, m in gm.named_children() if isinstance(m, ActivationObserver)}
