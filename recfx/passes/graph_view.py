"""A networkx view of an FX graph for analysis: users, dominance, subgraph isolation, layering."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import networkx as nx
from torch.fx import GraphModule, Node

from recfx.passes.utils import op_name, tensor_meta

_ROOT = "__root__"


def to_networkx(gm: GraphModule) -> nx.DiGraph:
    """A directed graph with one vertex per FX node (by name) and an edge from each input to its user.

    Vertex attributes: ``op`` (placeholder / call_function / ...), ``target`` (readable op name), ``shape`` and
    ``dtype`` when the node carries tensor metadata, and ``node`` (the FX node itself).
    """
    g = nx.DiGraph()
    for n in gm.graph.nodes:
        val = tensor_meta(n)
        g.add_node(n.name, op=n.op, target=op_name(n), node=n,
                   shape=tuple(str(s) for s in val.shape) if val is not None else None,
                   dtype=str(val.dtype).removeprefix("torch.") if val is not None else None)
    for n in gm.graph.nodes:
        for inp in n.all_input_nodes:
            g.add_edge(inp.name, n.name)
    return g


def users(gm: GraphModule, node: Node | str) -> list[str]:
    """Names of the nodes that read ``node``."""
    name = node.name if isinstance(node, Node) else node
    return sorted(to_networkx(gm).successors(name))


def _rooted(gm: GraphModule, reverse: bool) -> nx.DiGraph:
    """The bare edge structure (no attributes), optionally reversed, with a virtual root feeding every source."""
    g = nx.DiGraph()
    g.add_nodes_from(n.name for n in gm.graph.nodes)
    for n in gm.graph.nodes:
        for inp in n.all_input_nodes:
            g.add_edge(*((n.name, inp.name) if reverse else (inp.name, n.name)))
    sources = [v for v in g.nodes if g.in_degree(v) == 0]
    g.add_edges_from((_ROOT, v) for v in sources)
    return g


def dominators(gm: GraphModule) -> dict[str, str]:
    """Immediate dominator of every node, from a virtual root feeding all sources (inputs, attributes, constants)."""
    idom = nx.immediate_dominators(_rooted(gm, reverse=False), _ROOT)
    return {v: d for v, d in idom.items() if v != _ROOT}


def post_dominators(gm: GraphModule) -> dict[str, str]:
    """Immediate post-dominator of every node (the node all of its paths to the output pass through)."""
    ipdom = nx.immediate_dominators(_rooted(gm, reverse=True), _ROOT)
    return {v: d for v, d in ipdom.items() if v != _ROOT}


def dominates(idom: dict[str, str], a: str, b: str) -> bool:
    """True if ``a`` dominates ``b`` under the immediate-dominator map ``idom``."""
    while True:
        if b == a:
            return True
        parent = idom.get(b)
        if parent is None or parent == b:
            return False
        b = parent


@dataclasses.dataclass(frozen=True)
class Subgraph:
    """A set of nodes cut out of a graph: what flows in from outside and what is read outside."""

    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def is_single_output(self) -> bool:
        return len(self.outputs) == 1


def isolate(gm: GraphModule, names: Iterable[str]) -> Subgraph:
    """Inputs (producers outside the set read inside it) and outputs (nodes of the set read outside it)."""
    g = to_networkx(gm)
    inside = set(names)
    missing = inside - set(g.nodes)
    if missing:
        raise ValueError(f"nodes not in the graph: {sorted(missing)}")
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    ins = {u for v in inside for u in g.predecessors(v) if u not in inside}
    outs = {v for v in inside if any(w not in inside for w in g.successors(v))}
    key = order.__getitem__
    return Subgraph(tuple(sorted(inside, key=key)), tuple(sorted(ins, key=key)), tuple(sorted(outs, key=key)))


def ancestors_within(gm: GraphModule, node: str, stop: Iterable[str] = ()) -> set[str]:
    """All nodes ``node`` depends on, not walking past the nodes in ``stop``."""
    g = to_networkx(gm)
    stop_set = set(stop)
    seen: set[str] = set()
    todo = [node]
    while todo:
        v = todo.pop()
        for u in g.predecessors(v):
            if u not in seen and u not in stop_set:
                seen.add(u)
                todo.append(u)
    return seen


def layers(g: nx.DiGraph) -> dict[str, int]:
    """Topological generation of each vertex (used to lay the graph out in the dump pictures)."""
    return {v: i for i, gen in enumerate(nx.topological_generations(g)) for v in gen}
