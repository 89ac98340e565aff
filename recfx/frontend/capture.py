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

from recfx.errors import CaptureError
from recfx.frontend.errors import export_failure
from recfx.frontend.inputs import input_names, normalize_example_inputs

log = logging.getLogger(__name__)

#: input name or position -> {dim: a symbol name, a derived dim ("8*batch", "batch+1") or a torch.export Dim}
DynamicDims = Mapping[int | str, Mapping[int, Any]]

#: torch.export and the tracers built on it (``run_decompositions``, the dynamo ONNX exporter) patch process-wide
#: state while they trace (the symbolic-trace patcher, the proxy-mode slot, module attribute access): two traces at
#: once from different threads, or a trace beside model code that runs in a compile's passes (calibration), corrupt
#: each other. Every trace recfx makes holds this lock, and so does ``recfx.compile`` as a whole, so compiles from
#: several threads run one after the other.
TRACE_LOCK = threading.RLock()


def export_program(model: torch.nn.Module, inputs: tuple[Any, ...], dynamic_shapes: Any = None) -> ExportedProgram:
    """``torch.export.export`` (non-strict) under :data:`TRACE_LOCK`, with autograd off.

    recfx compiles for inference and every compiled module runs under ``torch.inference_mode``, so the model is
    traced as it will run: without autograd. Under grad mode, autograd's view checks refuse code that is valid
    inference code, e.g. an in-place write to a piece of ``split``/``chunk``/``unbind`` of a tensor computed from
    parameters ("Output 0 of Split is a view and is being modified inplace"); without autograd such a write is an
    ordinary write through a view, and the graph is otherwise the same (``tests/frontend/test_capture.py``).
    """
    with TRACE_LOCK, torch.no_grad():
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
        dynamic_batch: make dim 0 dynamic ("batch") on the inputs whose dim 0 is the batch, decided from the
            example inputs: the most common dim-0 size (ties: the first input's). Inputs with another dim 0
            (jagged values, offsets, lengths) stay static unless ``dynamic_dims`` names them.
        dynamic_dims: more dynamic dims, keyed by input name or position: ``{"tokens": {1: "seq"}}``. Dims with the
            same symbol name are the same size; a derived dim is a multiple of a symbol plus an offset,
            ``{"lengths": {0: "8*batch"}, "offsets": {0: "batch+1"}}``, or a torch.export ``Dim`` expression.
        dynamic_shapes: a raw ``torch.export`` ``dynamic_shapes`` spec; overrides the two options above.

    Returns:
        A :class:`CapturedGraph`.

    Raises:
        TypeError: example inputs that are not tensors or do not fit ``forward``.
        ValueError: a model in training mode, or a dynamic dim whose example size cannot be dynamic (0 or 1).
        CaptureError: ``torch.export`` failed; the message names the operation, the source line, a fix, and the
            inputs and dims whose dynamic symbol the failure involves.

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
    dims: dict[int, dict[int, Any]] = {}
    if dynamic_shapes is None:
        dims = _dynamic_dims(inputs, names, dynamic_batch, dynamic_dims or {})
        dynamic_shapes = _to_export_spec(model, inputs, dims)
    try:
        ep = export_program(model, inputs, dynamic_shapes)
    except Exception as exc:  # torch.export raises many unrelated types; all become one clear error
        err = export_failure(model, exc)
        named = _dims_in_message(exc, dims, names)
        raise (CaptureError(f"{err}\n  dynamic dims involved: {named}") if named else err) from exc
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


#: a derived dim: ``"8*batch"``, ``"batch+1"``, ``"2*batch-1"`` (a multiple of one symbol plus an offset)
_DERIVED = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*(?:([+-])\s*(\d+))?\s*$")


def batch_size(inputs: tuple[torch.Tensor, ...]) -> int | None:
    """The batch size the example inputs show: the most common size of dim 0 (ties: the first input's)."""
    sizes = [x.shape[0] for x in inputs if x.dim() > 0]
    if not sizes:
        return None
    return max(sizes, key=lambda n: (sizes.count(n), -sizes.index(n)))


def _dynamic_dims(
    inputs: tuple[torch.Tensor, ...], names: list[str], dynamic_batch: bool, extra: DynamicDims
) -> dict[int, dict[int, Any]]:
    """Input index -> {dim: symbol name, derived expression (``"8*batch"``) or a torch.export ``Dim``}.

    ``dynamic_batch`` marks dim 0 of the inputs whose dim 0 is the batch (:func:`batch_size`); inputs whose dim 0
    is something else (jagged values, offsets, lengths) stay static unless ``extra`` names them.
    """
    dims: dict[int, dict[int, Any]] = {i: {} for i in range(len(inputs))}
    batch = batch_size(inputs) if dynamic_batch else None
    for i, x in enumerate(inputs):
        if batch is not None and x.dim() > 0 and x.shape[0] == batch:
            dims[i][0] = "batch"
    others = [f"{names[i]} ({x.shape[0]})" for i, x in enumerate(inputs) if x.dim() > 0 and not dims[i]]
    if batch is not None and others:
        log.info("dynamic batch: dim 0 of the inputs of size %d; not batch-major (static unless in dynamic_dims): "
                 "%s", batch, ", ".join(others))
    for key, spec in extra.items():
        i = _input_index(key, names)
        for d, sym in spec.items():
            if not -inputs[i].dim() <= d < inputs[i].dim():
                raise ValueError(f"dynamic dim {d} of input {names[i]!r} is out of range for shape "
                                 f"{tuple(inputs[i].shape)}")
            dims[i][d % inputs[i].dim()] = sym
    _check_derived(inputs, names, dims)
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


def _derived(sym: Any) -> tuple[int, str, int] | None:
    """``(a, name, b)`` for a dim written ``"a*name+b"`` other than a plain name, else None."""
    if not isinstance(sym, str):
        return None
    found = _DERIVED.match(sym)
    if found is None:
        raise ValueError(f"dynamic dim {sym!r} is neither a name nor a derived dim like '8*batch' or 'batch+1'")
    scale, name, sign, offset = found.groups()
    a, b = int(scale or 1), (int(offset) if sign == "+" else -int(offset)) if offset else 0
    return None if (a, b) == (1, 0) else (a, name, b)


def _check_derived(inputs: tuple[torch.Tensor, ...], names: list[str], dims: dict[int, dict[int, Any]]) -> None:
    """Every derived dim fits its example size, given the size the plain dims of the same name have."""
    plain = {sym: (i, d) for i, spec in dims.items() for d, sym in spec.items()
             if isinstance(sym, str) and _derived(sym) is None}
    for i, spec in dims.items():
        for d, sym in spec.items():
            form = _derived(sym)
            if form is None or form[1] not in plain:
                continue
            a, name, b = form
            j, e = plain[name]
            want = a * inputs[j].shape[e] + b
            if inputs[i].shape[d] != want:
                raise ValueError(f"input {names[i]!r} dim {d} is declared {sym!r}, which is {want} for the example "
                                 f"inputs ({name} = {inputs[j].shape[e]}: input {names[j]!r} dim {e}), but its "
                                 f"example size is {inputs[i].shape[d]}")


def export_dim(expr: str, roots: dict[str, Any]) -> Any:
    """The torch.export dim for a name or a derived dim (``"8*batch"``, ``"batch + 1"``), sharing ``roots``.

    Raises:
        ValueError: ``expr`` is neither.
    """
    form = _derived(expr)
    if form is None:
        return roots.setdefault(expr.strip(), Dim(expr.strip()))
    a, name, b = form
    root = roots.setdefault(name, Dim(name))
    return (a * root if a != 1 else root) + b if b else a * root


def _export_dims(dims: dict[int, dict[int, Any]]) -> dict[int, dict[int, Any]]:
    """The same dims as torch.export objects: one ``Dim`` per name, derived dims as expressions of it."""
    roots: dict[str, Any] = {}
    return {i: {d: export_dim(sym, roots) if isinstance(sym, str) else sym for d, sym in spec.items()}
            for i, spec in dims.items()}


def _dims_in_message(exc: BaseException, dims: dict[int, dict[int, Any]], names: list[str]) -> str:
    """The inputs and dims whose dynamic symbol a torch.export error names (``Constraints violated (batch)!``)."""
    text = " ".join(str(e) for e in _exception_chain(exc))
    hits = []
    for i, spec in dims.items():
        for d, sym in spec.items():
            form = _derived(sym) if isinstance(sym, str) else None
            name = form[1] if form else (sym.strip() if isinstance(sym, str) else getattr(sym, "__name__", str(sym)))
            if re.search(rf"\b{re.escape(name)}\b", text):
                hits.append(f"input {names[i]!r} dim {d} ({sym})")
    return "; ".join(hits)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _to_export_spec(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                    dims: dict[int, dict[int, Any]]) -> tuple[Any, ...] | None:
    """A ``dynamic_shapes`` spec shaped like ``forward``'s parameters (``*args`` get a tuple); one ``Dim`` per name."""
    if not any(dims.values()):
        return None
    export_dims = _export_dims(dims)
    flat = [(export_dims[i] or None) for i in range(len(inputs))]
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


def _symbol_names(gm: torch.fx.GraphModule, dims: dict[int, dict[int, Any]]) -> dict[str, str]:
    """Map the graph's shape symbols (``s31``) to the names the user gave them (``batch``)."""
    rename: dict[str, str] = {}
    for i, node in enumerate(_placeholders(gm)):
        sd = _shape_of(node)
        for d, sym in dims.get(i, {}).items():
            name = sym if isinstance(sym, str) else getattr(sym, "__name__", "")  # a torch.export Dim: its name
            plain = isinstance(name, str) and name.strip().isidentifier()
            graph_dim = sd[0][d] if sd is not None else None
            if isinstance(graph_dim, str) and graph_dim.isidentifier() and plain:
                rename[graph_dim] = name.strip()
    return rename


def _renamed(spec: TensorSpec, rename: dict[str, str]) -> TensorSpec:
    shape = tuple(_rename_expr(d, rename) if isinstance(d, str) else d for d in spec.shape)
    return dataclasses.replace(spec, shape=shape)


def _rename_expr(expr: str, rename: dict[str, str]) -> str:
    for sym in sorted(rename, key=len, reverse=True):
        expr = re.sub(rf"\b{sym}\b", rename[sym], expr)
    return expr
