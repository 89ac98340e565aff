"""``capture``: torch.export (non-strict) of a model into the aten-level graph that recfx's passes transform."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import torch
from torch.export import Dim, ExportedProgram

from recfx.frontend.errors import export_failure
from recfx.frontend.inputs import input_names, normalize_example_inputs

log = logging.getLogger(__name__)

DynamicDims = Mapping[int | str, Mapping[int, str]]

#: torch.export and the tracers built on it (``run_decompositions``, the dynamo ONNX exporter) patch process-wide
#: state while they trace (the symbolic-trace patcher, the proxy-mode slot, module attribute access): two traces at
#: once from different threads, or a trace beside model code that runs in a compile's passes (calibration), corrupt
#: each other. Every trace recfx makes holds this lock, and so does ``recfx.compile`` as a whole, so compiles from
#: several threads run one after the other.
TRACE_LOCK = threading.RLock()


def export_program(model: torch.nn.Module, inputs: tuple[Any, ...], dynamic_shapes: Any = None) -> ExportedProgram:
    """``torch.export.export`` (non-strict) under :data:`TRACE_LOCK`."""
    with TRACE_LOCK:
        return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes, strict=False)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape, dtype and device of a graph input or output; dynamic dims are given by their symbol name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype
    device: torch.device | None = None

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {str(self.dtype).removeprefix('torch.')}[{dims}]"


@dataclasses.dataclass
class CapturedGraph:
    """What :func:`capture` returns: the exported program and the graph module the passes work on.

    Attributes:
        exported_program: the ``torch.export`` result (parameters lifted to inputs).
        graph_module: the same graph with parameters and buffers as attributes (``get_attr`` nodes); this is
            the module the pass pipeline rewrites and the backends run. It takes the flat tensor inputs.
        input_specs / output_specs: names, shapes (symbol names for dynamic dims) and dtypes.
        parameters / buffers: the model's state by qualified name.
        dynamic_dims: input name -> {dim index: symbol name}.
        example_inputs: the inputs the graph was captured with.
    """

    exported_program: ExportedProgram
    graph_module: torch.fx.GraphModule
    input_specs: list[TensorSpec]
    output_specs: list[TensorSpec]
    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    dynamic_dims: dict[str, dict[int, str]]
    example_inputs: tuple[torch.Tensor, ...]

    def summary(self) -> str:
        """A few lines describing the captured graph (inputs, outputs, sizes)."""
        n_params = sum(p.numel() for p in self.parameters.values())
        nodes = len(self.graph_module.graph.nodes)
        lines = [f"captured graph: {nodes} nodes, {n_params:,} parameters, {len(self.buffers)} buffers"]
        lines += [f"  in  {s}" for s in self.input_specs]
        lines += [f"  out {s}" for s in self.output_specs]
        return "\n".join(lines)


def capture(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    dynamic_batch: bool = True,
    dynamic_dims: DynamicDims | None = None,
    dynamic_shapes: Any = None,
) -> CapturedGraph:
    """Capture ``model`` with ``torch.export`` (non-strict) into an aten-level graph.

    Args:
        model: an ``nn.Module`` in eval mode.
        example_inputs: a tuple of tensors, one per positional argument of ``model.forward``.
        dynamic_batch: make dim 0 of every tensor input dynamic (inputs with the same example batch share a symbol).
        dynamic_dims: more dynamic dims, keyed by input name or position: ``{"tokens": {1: "seq"}}``. Dims with the
            same symbol name are the same size.
        dynamic_shapes: a raw ``torch.export`` ``dynamic_shapes`` spec; overrides the two options above.

    Returns:
        A :class:`CapturedGraph`.

    Raises:
        TypeError: example inputs that are not tensors or do not fit ``forward``.
        ValueError: a model in training mode, or a dynamic dim whose example size cannot be dynamic (0 or 1).
        CaptureError: ``torch.export`` failed; the message names the operation, the source line and a fix.

    Example:
        >>> import torch
        >>> from recfx.frontend import capture
        >>> g = capture(torch.nn.Linear(4, 2).eval(), (torch.randn(3, 4),))
        >>> g.dynamic_dims
        {'input': {0: 'batch'}}
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(
            f"{type(model).__name__} is in training mode; recfx compiles for inference. Call model.eval() first."
        )
    inputs = normalize_example_inputs(model, example_inputs)
    names = input_names(model, len(inputs))
    dims: dict[int, dict[int, str]] = {}
    if dynamic_shapes is None:
        dims = _dynamic_dims(inputs, names, dynamic_batch, dynamic_dims or {})
        dynamic_shapes = _to_export_spec(model, inputs, dims)
    try:
        ep = export_program(model, inputs, dynamic_shapes)
    except Exception as exc:  # torch.export raises many unrelated types; all become one clear error
        raise export_failure(model, exc) from exc
    gm = ep.module()
    assert isinstance(gm, torch.fx.GraphModule)
    rename = _symbol_names(gm, dims)
    in_specs = [_renamed(s, rename) for s in _input_specs(gm, names)]
    captured = CapturedGraph(
        exported_program=ep,
        graph_module=gm,
        input_specs=in_specs,
        output_specs=[_renamed(s, rename) for s in _output_specs(gm)],
        parameters=dict(model.named_parameters()),
        buffers=dict(model.named_buffers()),
        dynamic_dims={s.name: {d: x for d, x in enumerate(s.shape) if isinstance(x, str)} for s in in_specs
                      if any(isinstance(x, str) for x in s.shape)},
        example_inputs=inputs,
    )
    log.info("captured %s: %d nodes", type(model).__name__, len(gm.graph.nodes))
    return captured


def _dynamic_dims(
    inputs: tuple[torch.Tensor, ...], names: list[str], dynamic_batch: bool, extra: DynamicDims
) -> dict[int, dict[int, str]]:
    dims: dict[int, dict[int, str]] = {i: {} for i in range(len(inputs))}
    if dynamic_batch:
        batches = sorted({x.shape[0] for x in inputs if x.dim() > 0})
        for i, x in enumerate(inputs):
            if x.dim() > 0:
                dims[i][0] = "batch" if len(batches) == 1 else f"batch_{batches.index(x.shape[0])}"
    for key, spec in extra.items():
        i = _input_index(key, names)
        for d, sym in spec.items():
            if not -inputs[i].dim() <= d < inputs[i].dim():
                raise ValueError(f"dynamic dim {d} of input {names[i]!r} is out of range for shape "
                                 f"{tuple(inputs[i].shape)}")
            dims[i][d % inputs[i].dim()] = sym
    for i, spec in dims.items():
        for d, sym in spec.items():
            if inputs[i].shape[d] < 2:
                raise ValueError(
                    f"input {names[i]!r} dim {d} is marked dynamic ({sym!r}) but its example size is "
                    f"{inputs[i].shape[d]}; torch.export specializes sizes 0 and 1. Use an example size >= 2 "
                    "(e.g. a batch of 2), or do not mark this dim dynamic."
                )
    return dims


def _input_index(key: int | str, names: list[str]) -> int:
    if isinstance(key, int):
        if not 0 <= key < len(names):
            raise ValueError(f"dynamic_dims names input #{key} but forward takes {len(names)} inputs: {names}")
        return key
    if key not in names:
        raise ValueError(f"dynamic_dims names input {key!r}; the inputs are {names}")
    return names.index(key)


def _to_export_spec(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                    dims: dict[int, dict[int, str]]) -> tuple[Any, ...] | None:
    """A ``dynamic_shapes`` spec shaped like ``forward``'s parameters (``*args`` get a tuple); one ``Dim`` per name."""
    if not any(dims.values()):
        return None
    symbols = {sym: Dim(sym) for spec in dims.values() for sym in spec.values()}
    flat = [({d: symbols[s] for d, s in dims[i].items()} or None) for i in range(len(inputs))]
    spec: list[Any] = []
    for p in inspect.signature(model.forward).parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            spec.append(tuple(flat[len(spec):]))
            break
        positional = p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if positional and len(spec) < len(flat):
            spec.append(flat[len(spec)])
    return tuple(spec)


def _placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _shape_of(node: torch.fx.Node) -> tuple[tuple[int | str, ...], torch.dtype, torch.device] | None:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return None
    shape = tuple(int(s) if isinstance(s, int) or s.node.is_constant() else str(s) for s in val.shape)
    return shape, val.dtype, val.device


def _input_specs(gm: torch.fx.GraphModule, names: list[str]) -> list[TensorSpec]:
    specs = []
    for name, node in zip(names, _placeholders(gm)):
        sd = _shape_of(node)
        if sd is not None:
            specs.append(TensorSpec(name, *sd))
    return specs


def _output_specs(gm: torch.fx.GraphModule) -> list[TensorSpec]:
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    flat = torch.utils._pytree.tree_leaves(out.args[0])
    specs = []
    for i, node in enumerate(flat):
        sd = _shape_of(node) if isinstance(node, torch.fx.Node) else None
        if sd is not None:
            specs.append(TensorSpec(f"output_{i}", *sd))
    return specs


def _symbol_names(gm: torch.fx.GraphModule, dims: dict[int, dict[int, str]]) -> dict[str, str]:
    """Map the graph's shape symbols (``s31``) to the names the user gave them (``batch``)."""
    rename: dict[str, str] = {}
    for i, node in enumerate(_placeholders(gm)):
        sd = _shape_of(node)
        for d, name in dims.get(i, {}).items():
            if sd is not None and isinstance(sd[0][d], str):
                rename[str(sd[0][d])] = name
    return rename


def _renamed(spec: TensorSpec, rename: dict[str, str]) -> TensorSpec:
    shape = tuple(_rename_expr(d, rename) if isinstance(d, str) else d for d in spec.shape)
    return dataclasses.replace(spec, shape=shape)


def _rename_expr(expr: str, rename: dict[str, str]) -> str:
    for sym in sorted(rename, key=len, reverse=True):
        expr = re.sub(rf"\b{sym}\b", rename[sym], expr)
    return expr
