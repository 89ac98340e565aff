"""Repeated blocks compiled once: identical stretches of a graph become calls of one nested compile region.

An exported transformer is one flat graph. onerec-1b's three beam steps run its 16 decoder blocks 48 times, and
Inductor lowers, schedules and generates code for every copy: compile time grows with the layer count, and the FP8
graph (each quantized activation adds about ten aten nodes) takes about twice as long as the bf16 one. When the
blocks of one step compute the same thing on different weights, Inductor can compile the block once:
``torch.compiler.nested_compile_region`` marks a function that Dynamo traces once into an ``invoke_subgraph`` and
Inductor emits as one ``repeated_subgraph`` function, called once per layer with that layer's weights.

:func:`outline_repeated_blocks` finds the blocks from the graph's own module metadata (``nn_module_stack``: the
outermost indexed module, ``layers.3``) as stretches of consecutive nodes, compares them structurally (the same ops
with the same arguments, inputs of the same dtype, shape, strides and device) and replaces every stretch that has a
twin by a call of their shared region, the stretch's inputs (activations, that layer's weights, sizes) as operands.
It works on a copy; the graph it is given is not changed. A stretch stays in the flat graph when

- one of its nodes is not a pure function call (an in-place write, randomness, a side effect, a module call);
- one of its outputs is a view of one of its inputs, two of its outputs share storage, or two of its inputs do
  (``torch.compile`` takes no aliasing across a region's boundary; the views and size computations that read only
  the block's inputs, such as weight transposes, are left out of the stretch first);
- one of its inputs or outputs is neither a tensor nor an integer;
- no other stretch has its structure (nothing to share), or it is shorter than ``min_nodes``.

Inside a block the kernels are the ones the flat graph gets. Across block boundaries Inductor no longer fuses: the
residual add that ends a block and the next block's norm run as two kernels (one more read of the residual stream
per block), and that add is rounded to the activation dtype before the norm reads it, as in eager mode. The result
agrees with the flat compile within the usual reordering tolerance, not bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import operator
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import Graph, GraphModule, Node

from recfx.passes.utils import alias_root, fetch_attr, is_impure, op_name, returns_alias

log = logging.getLogger(__name__)

#: Stretches shorter than this stay flat (a region call costs a little at run time and saves nothing to compile).
MIN_NODES = 8
#: The submodules holding the regions are named with this prefix and a number.
REGION_PREFIX = "recfx_region_"
_INDEXED = re.compile(r"(\.\d+|\[\d+\])$")


@dataclasses.dataclass
class RegionStats:
    """What :func:`outline_repeated_blocks` did: for the compile report."""

    regions: int = 0  # distinct bodies, each compiled once
    calls: int = 0  # stretches replaced by a call of their region
    nodes_before: int = 0  # call_function nodes of the flat graph
    nodes_after: int = 0  # call_function nodes left to compile: the parent graph's plus one copy of each body
    left_flat: dict[str, int] = dataclasses.field(default_factory=dict)  # why stretches stayed flat -> count

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def render(self) -> str:
        flat = ", ".join(f"{n} {why}" for why, n in self.left_flat.items()) or "none"
        return (f"{self.calls} repeated blocks as {self.regions} regions compiled once each: {self.nodes_before} -> "
                f"{self.nodes_after} nodes to compile; blocks left flat: {flat}")


class Region(torch.nn.Module):
    """One block's graph, called once per layer. Its body's ``forward`` is a nested compile region, so
    ``torch.compile`` traces and compiles it once for all the calls that share its input metadata. The region is
    the body's own generated code, one code object per body: Dynamo reuses a traced region by its function's code
    and the inputs' guards, so two bodies sharing one ``forward`` (a decorated method of this class) would be taken
    for each other when their operands look alike."""

    def __init__(self, body: GraphModule) -> None:
        super().__init__()
        self.body = body
        # GraphModule gives each instance its own class and generated forward: a function of its own to mark
        self.region = torch.compiler.nested_compile_region(type(body).forward)

    def forward(self, *args: Any) -> Any:
        return self.region(self.body, *args)


@dataclasses.dataclass
class _Stretch:
    key: str
    nodes: list[Node]  # the call_function nodes, in graph order
    inputs: list[Node] = dataclasses.field(default_factory=list)
    outputs: list[Node] = dataclasses.field(default_factory=list)


def _block_key(node: Node) -> str | None:
    """The outermost indexed module (``layers.3``) whose code made ``node``; None when there is none."""
    stack = node.meta.get("nn_module_stack") or {}
    for entry in stack.values():
        path = entry[0] if isinstance(entry, tuple) else None
        if isinstance(path, str) and _INDEXED.search(path):
            return path
    return None


def _stretches(graph: Graph) -> Iterator[_Stretch]:
    """Maximal runs of consecutive call_function nodes from one indexed module (a module called twice gives two
    runs). Nodes without metadata between two nodes of the same module belong to the run (passes insert nodes
    without ``nn_module_stack``); get_attr nodes never do (they stay in the parent graph as operands)."""
    current: _Stretch | None = None
    pending: list[Node] = []
    for node in graph.nodes:
        if node.op == "get_attr":
            continue
        key = _block_key(node) if node.op == "call_function" else None
        if node.op != "call_function" or (key is None and node.meta.get("nn_module_stack")):
            if current is not None:  # a placeholder, the output or a node of no indexed module ends the run
                yield current
            current, pending = None, []
            continue
        if key is None:
            pending.append(node)
            continue
        if current is not None and current.key == key:
            current.nodes += pending
            current.nodes.append(node)
        else:
            if current is not None:
                yield current
            current = _Stretch(key, [node])
        pending = []
    if current is not None:
        yield current


def _impure(node: Node) -> bool:
    """:func:`is_impure`, except that a check of a tensor's metadata stays in its block: the signature fixes the
    operands' metadata, so it holds for every block of a region or for none (a dtype cast in an RMSNorm leaves one)."""
    return is_impure(node) and node.target is not torch.ops.aten._assert_tensor_metadata.default


#: Ops that always return a view (``to`` / ``contiguous`` / ``reshape`` may return their input or a copy: they are
#: computation of the block, not hoisted).
_VIEW_OPS = frozenset({"alias", "as_strided", "chunk", "detach", "diagonal", "expand", "expand_as", "movedim",
                       "narrow", "permute", "select", "slice", "split", "split_with_sizes", "squeeze", "swapaxes",
                       "t", "transpose", "unbind", "unflatten", "unfold", "unsqueeze", "view", "view_as",
                       "_unsafe_view"})


def _is_view(node: Node) -> bool:
    target = node.target
    return (isinstance(target, torch._ops.OpOverload) and returns_alias(node)
            and target._schema.name.split("::")[-1] in _VIEW_OPS)


def _hoist_loose(stretch: _Stretch) -> None:
    """Leave out of the stretch the views and size computations that read no value the stretch computes: weight
    transposes, sizes, views of the block's inputs (no arithmetic on tensor data). They stay where they are in
    the parent graph (before the region call, which they do not depend on). A graph after CSE computes such
    values once and shares them (the first beam step's layers transpose their FP8 weights, the later steps'
    layers read those transposes): left in, they would make one layer's block differ from its twins, and a view
    of an input would be a region output."""
    inside = set(stretch.nodes)
    loose: set[Node] = set()
    for node in stretch.nodes:
        reads = node.all_input_nodes
        piece = node.target is operator.getitem and isinstance(node.args[0], Node) and node.args[0] in loose
        free = piece or _is_view(node) or isinstance(node.meta.get("val"), (torch.SymInt, int))
        if free and not _impure(node) and all(a not in inside or a in loose for a in reads):
            loose.add(node)
    stretch.nodes = [node for node in stretch.nodes if node not in loose]


def _val(gm: GraphModule, node: Node) -> Any:
    return fetch_attr(gm, str(node.target)) if node.op == "get_attr" else node.meta.get("val")


def _describe_input(gm: GraphModule, node: Node) -> tuple[Any, ...] | None:
    """An input's type, dtype, shape, strides and device (None: neither a tensor nor an integer)."""
    value = _val(gm, node)
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(map(str, value.shape)), tuple(map(str, value.stride())),
                str(value.device))
    if isinstance(value, (torch.SymInt, int)) and not isinstance(value, bool):
        return ("int",)
    return None


def _encode(value: Any, local: dict[Node, int], inputs: dict[Node, int]) -> Any:
    if isinstance(value, Node):
        return ("n", local[value]) if value in local else ("i", inputs[value])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_encode(v, local, inputs) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _encode(v, local, inputs)) for k, v in value.items()))
    return (type(value).__name__, repr(value))


def _signature(gm: GraphModule, stretch: _Stretch) -> tuple[Any, ...] | str:
    """The stretch's structure (equal signatures: the same computation on operands of the same metadata), or why
    it cannot become a region."""
    inside = {node: i for i, node in enumerate(stretch.nodes)}
    if any(_impure(node) for node in stretch.nodes):
        return "impure node"
    inputs = {node: i for i, node in enumerate(_operands(stretch))}  # the order the region's placeholders take
    ops = []
    for node in stretch.nodes:
        target = op_name(node) if node.target is not operator.getitem else "getitem"
        ops.append((target, _encode(node.args, inside, inputs), _encode(node.kwargs, inside, inputs)))
    described = [_describe_input(gm, node) for node in inputs]
    if any(d is None for d in described):
        return "operand neither tensor nor int"
    roots = [alias_root(node) for node in inputs if isinstance(_val(gm, node), torch.Tensor)]
    if len(set(roots)) < len(roots):  # torch.compile refuses a region whose operands share storage
        return "operands alias each other"
    outputs = [node for node in stretch.nodes if any(user not in inside for user in node.users)]
    for out in outputs:
        if not isinstance(out.meta.get("val"), torch.Tensor):
            return "output not a tensor"
        if alias_root(out) not in inside:
            return "output views an input"
    out_roots = [alias_root(out) for out in outputs]
    if len(set(out_roots)) < len(out_roots):  # nor one whose outputs share storage
        return "outputs alias each other"
    stretch.outputs = outputs
    return (tuple(ops), tuple(described), tuple(inside[o] for o in outputs))


def _operands(stretch: _Stretch) -> list[Node]:
    """The values the stretch reads from outside, in order of first use (read from the graph as it is now: an
    earlier replacement may have turned one into its region call's output)."""
    inside = set(stretch.nodes)
    operands: dict[Node, None] = {}
    for node in stretch.nodes:
        for arg in node.all_input_nodes:
            if arg not in inside:
                operands.setdefault(arg)
    return list(operands)


def _body(stretch: _Stretch) -> GraphModule:
    stretch.inputs = _operands(stretch)
    graph = Graph()
    env: dict[Node, Node] = {}
    for i, node in enumerate(stretch.inputs):
        env[node] = graph.placeholder(f"operand_{i}")
        env[node].meta = dict(node.meta)
    for node in stretch.nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(tuple(env[o] for o in stretch.outputs))
    return GraphModule(torch.nn.Module(), graph)


def _replace(gm: GraphModule, stretch: _Stretch, name: str) -> None:
    graph = gm.graph
    stretch.inputs = _operands(stretch)
    inside = set(stretch.nodes)
    with graph.inserting_after(stretch.nodes[-1]):
        call = graph.call_module(name, tuple(stretch.inputs))
    previous = call
    for j, out in enumerate(stretch.outputs):
        with graph.inserting_after(previous):
            item = graph.call_function(operator.getitem, (call, j))
        item.meta = {k: v for k, v in out.meta.items() if k in ("val", "tensor_meta", "nn_module_stack")}
        out.replace_all_uses_with(item, delete_user_cb=lambda user: user not in inside)
        previous = item
    for node in reversed(stretch.nodes):
        graph.erase_node(node)


def outline_repeated_blocks(gm: GraphModule, min_nodes: int = MIN_NODES) -> tuple[GraphModule, RegionStats]:
    """A copy of ``gm`` whose repeated blocks are calls of shared nested compile regions (module docstring).

    Returns ``(gm, stats)`` unchanged (the same object) when nothing repeats.
    """
    stats = RegionStats(nodes_before=sum(n.op == "call_function" for n in gm.graph.nodes))
    stats.nodes_after = stats.nodes_before
    if not hasattr(torch.compiler, "nested_compile_region"):
        stats.left_flat["torch without nested_compile_region"] = 1
        return gm, stats
    groups: dict[tuple[Any, ...], list[_Stretch]] = {}
    for stretch in _stretches(gm.graph):
        _hoist_loose(stretch)
        if len(stretch.nodes) < min_nodes:
            continue
        signature = _signature(gm, stretch)
        if isinstance(signature, str):
            stats.left_flat[signature] = stats.left_flat.get(signature, 0) + 1
        else:
            groups.setdefault(signature, []).append(stretch)
    shared = [group for group in groups.values() if len(group) > 1]
    singles = len(groups) - len(shared)
    if singles:
        stats.left_flat["no twin"] = singles
    if not shared:
        return gm, stats
    out = GraphModule(gm, copy.deepcopy(gm.graph))
    index = dict(zip(gm.graph.nodes, out.graph.nodes))
    for number, group in enumerate(shared):
        name = f"{REGION_PREFIX}{number}"
        copies = [_Stretch(s.key, [index[n] for n in s.nodes], [], [index[n] for n in s.outputs]) for s in group]
        out.add_submodule(name, Region(_body(copies[0])))
        for stretch in copies:
            _replace(out, stretch, name)
        stats.regions += 1
        stats.calls += len(group)
    out.graph.lint()
    out.recompile()
    bodies = sum(n.op == "call_function" for m in out.modules() if isinstance(m, Region) for n in m.body.graph.nodes)
    stats.nodes_after = sum(n.op == "call_function" for n in out.graph.nodes) + bodies
    log.info("regions: %d blocks as %d regions, %d -> %d nodes to compile", stats.calls, stats.regions,
             stats.nodes_before, stats.nodes_after)
    return out, stats
