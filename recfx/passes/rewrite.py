"""Pattern rewrites as data: a pattern written as plain PyTorch, a replacement, and an extra check.

A :class:`Rewrite` traces both functions with ``torch.export`` (so they are in the same aten dialect as the
captured graph), finds the pattern with fx's ``SubgraphMatcher`` and splices the replacement in. Variants of a
rewrite (operand order, transposes, scale as mul or div) come from parametrising the pattern function.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.passes.utils.matcher_utils import InternalMatch, SubgraphMatcher

from recfx.frontend.capture import export_program
from recfx.passes.utils import fill_meta

_PROVENANCE_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node", "recfx")


@dataclasses.dataclass(frozen=True)
class Match:
    """One occurrence of a pattern: its inputs by the pattern's argument names, and the matched nodes."""

    inputs: dict[str, Node]
    nodes: tuple[Node, ...]
    output: Node


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """A pattern, its replacement and a check, all plain PyTorch functions of the same named tensor arguments.

    Args:
        name: for logs and reports.
        pattern: e.g. ``lambda x, w, b: x @ w.t() + b``.
        replacement: e.g. ``lambda x, w, b: F.linear(x, w, b)``.
        example_args: tensors to trace both functions with (shapes only matter for tracing).
        check: ``Match -> bool``; a match is rewritten only where it returns True.
    """

    name: str
    pattern: Callable[..., torch.Tensor]
    replacement: Callable[..., torch.Tensor]
    example_args: tuple[Any, ...]
    check: Callable[[Match], bool] | None = None

    def apply(self, gm: GraphModule) -> int:
        """Rewrite every checked match in place; returns how many were rewritten."""
        pattern_graph, names = _trace(self.pattern, self.example_args)
        replacement_graph, rnames = _trace(self.replacement, self.example_args)
        matcher = SubgraphMatcher(pattern_graph, match_output=False, match_placeholder=False,
                                  remove_overlapping_matches=True, ignore_literals=False)
        count = 0
        for im in matcher.match(gm.graph):
            match = _to_match(im, names)
            if match is None or any(n.graph is not gm.graph or not _alive(n) for n in match.nodes):
                continue
            if self.check is not None and not self.check(match):
                continue
            _splice(gm, match, replacement_graph, rnames)
            count += 1
        if count:
            gm.graph.eliminate_dead_code(is_impure_node=_never_pure_removal)
            fill_meta(gm)
        return count


def _never_pure_removal(node: Node) -> bool:
    from recfx.passes.utils import is_impure

    return is_impure(node)


def _alive(node: Node) -> bool:
    return node in node.graph.nodes


@functools.lru_cache(maxsize=256)
def _trace_cached(fn: Callable[..., Any], shapes: tuple[Any, ...]) -> tuple[Graph, tuple[str, ...]]:
    args = tuple(torch.empty(s, dtype=d) if isinstance(s, tuple) else s for s, d in shapes)
    names = tuple(inspect.signature(fn).parameters)[: len(args)]  # defaults bind pattern parameters

    class _Wrap(torch.nn.Module):
        def forward(self, *a: Any) -> Any:
            return fn(*a)

    ep = export_program(_Wrap(), args)
    graph = Graph()
    env: dict[Node, Node] = {}
    out = graph.graph_copy(ep.graph_module.graph, env)
    graph.output(out)
    for node in graph.nodes:
        if node.op == "placeholder":
            node.meta.clear()
    return graph, names


def _trace(fn: Callable[..., Any], example_args: Sequence[Any]) -> tuple[Graph, tuple[str, ...]]:
    key = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else (a, None) for a in example_args)
    return _trace_cached(fn, key)


def _to_match(im: InternalMatch, names: tuple[str, ...]) -> Match | None:
    if len(im.returning_nodes) != 1 or len(im.placeholder_nodes) != len(names):
        return None
    inputs = dict(zip(names, im.placeholder_nodes))
    nodes = tuple(n for p, n in im.nodes_map.items() if p.op not in ("placeholder", "output"))
    return Match(inputs, nodes, im.returning_nodes[0])


def _splice(gm: GraphModule, match: Match, replacement: Graph, names: tuple[str, ...]) -> Node:
    graph = gm.graph
    placeholders = [n for n in replacement.nodes if n.op == "placeholder"]
    env: dict[Node, Any] = {p: match.inputs[name] for p, name in zip(placeholders, names)}
    provenance = {k: v for k, v in match.output.meta.items() if k in _PROVENANCE_KEYS}
    with graph.inserting_before(match.output):
        for node in replacement.nodes:
            if node.op in ("placeholder", "output"):
                continue
            new = graph.node_copy(node, lambda n: env[n])
            new.meta = dict(provenance)
            env[node] = new
    out_node = next(n for n in replacement.nodes if n.op == "output")
    result = torch.fx.node.map_arg(out_node.args[0], lambda n: env[n])
    if isinstance(result, (tuple, list)):
        (result,) = result
    match.output.replace_all_uses_with(result)
    return result
