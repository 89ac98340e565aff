"""The pass interface: ``GraphModule -> PassResult``, and the registry that names passes and their stages."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from recfx.registry import Registry

if TYPE_CHECKING:  # the pass context's field types; importing them here would import the FP8 passes first
    from recfx.frontend.capture import CapturedGraph
    from recfx.passes.quant.config import QuantConfig
    from recfx.passes.quant.state import Fp8State

log = logging.getLogger(__name__)

#: Pipeline stages in order. Invariants of a stage hold after it and in every later stage. What each holds by
#: default: ``recfx/passes/pipelines.py``.
STAGES: tuple[str, ...] = ("canonicalize", "quantize", "fuse", "lower")


@dataclasses.dataclass
class PassResult:
    """What a pass returns: the (possibly new) graph module and whether it changed the graph.

    ``changed_nodes`` counts the nodes the pass rewrote, for the report and the logs.
    """

    graph_module: torch.fx.GraphModule
    modified: bool
    changed_nodes: int = 0
    detail: str = ""


class GraphPass(Protocol):
    def __call__(self, gm: torch.fx.GraphModule) -> PassResult: ...


@dataclasses.dataclass
class PassContext:
    """What passes and the backend of one compile share beyond the graph, one typed field each.

    Passes that need nothing take only the graph; a pass class registered with :func:`register_pass` is
    constructed with this context once per pipeline, and the backend gets it in ``passes(ctx)`` and
    ``compile(gm, ctx)``. ``recfx.compile`` fills the inputs; passes and backends write the outputs.

    Attributes:
        example_inputs: the (normalised) example inputs of the capture.
        captured: the :class:`~recfx.frontend.capture.CapturedGraph` (input/output specs, dynamic dims);
            ``None`` when a pipeline runs on a bare graph (tests).
        model: the user's original ``nn.Module`` (the FP8 report compares against it).
        backend: the backend's name; ``backend_options``: ``CompileConfig.backend_options`` for it.
        quant: the user's ``QuantConfig`` (``None``: the default); ``calibration``: the calibration batches.
        fp8_state: the FP8 pipeline's shared state (``Fp8State.of(ctx)`` creates it on first use).
        report_sections: outputs: report objects (with ``render()`` / ``to_dict()``) by name, attached by
            ``recfx.compile`` to ``CompiledModule.report.sections``.
    """

    example_inputs: tuple[torch.Tensor, ...] = ()
    captured: CapturedGraph | None = None
    model: torch.nn.Module | None = None
    backend: str = ""
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    quant: QuantConfig | None = None
    calibration: Iterable[Any] | None = None
    fp8_state: Fp8State | None = None
    report_sections: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def dynamic_dims(self) -> dict[str, dict[int, str]]:
        """The capture's dynamic dims by input name (empty without a capture)."""
        return dict(self.captured.dynamic_dims) if self.captured is not None else {}


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """A registered pass: its name, stage, how to build it from a :class:`PassContext`, and its invariant line."""

    name: str
    stage: str
    build: Callable[[PassContext], GraphPass]
    doc: str
    postcondition: Callable[[torch.fx.GraphModule], list[str]] | None = None

    def instantiate(self, ctx: PassContext) -> GraphPass:
        return self.build(ctx)


PASSES: Registry[PassSpec] = Registry("pass")


def register_pass(
    name: str,
    *,
    stage: str,
    postcondition: Callable[[torch.fx.GraphModule], list[str]] | None = None,
) -> Callable[[Any], Any]:
    """Register a graph pass under ``name`` in ``stage``.

    Decorates either a function ``gm -> PassResult`` or a class whose ``__init__`` takes a :class:`PassContext` and
    whose instances are such functions. ``postcondition(gm)`` returns the violations of what the pass establishes;
    the pass manager checks it after the pass when invariant checking is on.

    Example:
        >>> from recfx.passes import PassResult, register_pass, PASSES
        >>> @register_pass("doc_example_noop", stage="canonicalize")
        ... def noop(gm):
        ...     "Changes nothing."
        ...     return PassResult(gm, modified=False)
        >>> PASSES.get("doc_example_noop").stage
        'canonicalize'
        >>> _ = PASSES.remove("doc_example_noop")
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} for pass {name!r}; stages: {', '.join(STAGES)}")

    def deco(obj: Any) -> Any:
        doc = (inspect.getdoc(obj) or "").splitlines()
        build: Callable[[PassContext], GraphPass]
        if inspect.isclass(obj):
            build = obj  # type: ignore[assignment]  # classes are built with the PassContext
        else:
            build = _constant_builder(obj)
        PASSES.add(name, PassSpec(name, stage, build, doc[0] if doc else "", postcondition))
        return obj

    return deco


def _constant_builder(fn: GraphPass) -> Callable[[PassContext], GraphPass]:
    def build(ctx: PassContext) -> GraphPass:
        return fn

    return build
