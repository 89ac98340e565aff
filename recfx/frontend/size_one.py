"""Squeezes of dynamic dims that may be 1: where code compiled once for every size of a dim goes wrong.

    >>> import torch
    >>> class Last(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x.squeeze(0)
    >>> ep = torch.export.export(Last(), (torch.randn(2, 3),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    >>> [h.split(" of size")[0] for h in size_one_hazards(ep)]
    ['squeeze squeezes dim 0']
"""

from __future__ import annotations

from typing import Any

import torch
from torch.export import ExportedProgram

__all__ = ["NAMED_SQUEEZES", "SQUEEZES", "describe", "size_one_hazards"]

#: ops whose result's shape depends on whether a dim is 1: squeeze drops only the dims that are
SQUEEZES = (torch.ops.aten.squeeze.default, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims)
#: the squeezes that name their dims (an ONNX ``Squeeze`` without axes decides at run time, like PyTorch)
NAMED_SQUEEZES = (torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims)


def size_one_hazards(ep: ExportedProgram, ops: tuple[Any, ...] = SQUEEZES) -> list[str]:
    """The squeezes (``ops``) in ``ep`` of dims whose size is dynamic and may be 1, described for an error message.

    The exported program runs such a squeeze as PyTorch does, deciding at each call whether the dim is 1. Code
    compiled once for every size cannot: AOTInductor assumes a dynamic dim is not 1 and would return the unsqueezed
    shape for a batch of 1 (seen with torch 2.13: ``(1, 8, 16)`` where the model returns ``(8, 16)``). An ONNX
    ``Squeeze`` with axes drops them always (the exporter writes the axes it saw to be 1, so ``squeeze((0, 2))``
    traced at batch 2 keeps the batch even at 1, and ``squeeze(0)`` fails the ONNX checker); one without axes decides
    at run time (:data:`NAMED_SQUEEZES` for ONNX). The in-process Inductor module is not affected: torch compiles a
    separate graph for size 1. Subgraphs (control flow, nested regions) are searched too. A size that cannot be 1 but
    is not known to (``2 * batch``) is reported too: a conservative check.
    """
    from torch.utils._sympy.value_ranges import bound_sympy

    names: dict[str, str] = {}  # symbol of each dynamic input dim -> "input dim d"
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in ep.graph_signature.input_specs:
        node = placeholders.get(getattr(spec.arg, "name", ""))
        val = node.meta.get("val") if node is not None else None
        if spec.kind == spec.kind.USER_INPUT and isinstance(val, torch.Tensor):
            for d, size in enumerate(val.shape):
                if isinstance(size, torch.SymInt):
                    names.setdefault(str(size.node.expr), f"{node.name} dim {d}")
    hazards: list[str] = []
    graphs = [m.graph for m in ep.graph_module.modules() if isinstance(m, torch.fx.GraphModule)]
    for node in (n for graph in graphs for n in graph.nodes):
        if node.op != "call_function" or node.target not in ops:
            continue
        val = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
        if not isinstance(val, torch.Tensor):
            continue
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", range(val.dim()))
        for d in [dims] if isinstance(dims, int) else list(dims):
            size = val.shape[d]
            if not isinstance(size, torch.SymInt):
                continue
            # the range the program is exported for (the tracer's own ranges assume sizes of at least 2)
            bounds = bound_sympy(size.node.expr, ep.range_constraints)
            if bounds.lower <= 1 <= bounds.upper:
                where = ", ".join(sorted(names.get(str(s), str(s)) for s in size.node.expr.free_symbols))
                trace = node.meta.get("stack_trace") or ""
                line = trace.strip().splitlines()[-1].strip() if trace.strip() else ""
                hazards.append(f"{node.name} squeezes dim {d} of size {size} (from {where})"
                               + (f": {line}" if line else ""))
    return hazards


def describe(hazards: list[str]) -> str:
    """The first few ``hazards`` as one clause for an error message."""
    more = f"; and {len(hazards) - 3} more" if len(hazards) > 3 else ""
    return f"the graph squeezes a dynamic dim that may be 1 ({'; '.join(hazards[:3])}{more})"
