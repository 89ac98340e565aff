"""Small graph helpers shared by the passes: purity, constants, fake-tensor metadata."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import torch
from torch._guards import detect_fake_mode
from torch.fx import GraphModule, Node

aten = torch.ops.aten

#: Ops that must never be removed, merged or folded (randomness, side effects, runtime checks).
_IMPURE_NAMES = ("_assert", "sym_constrain", "rand", "bernoulli", "normal", "uniform", "print", "copy_", "_guards")


def op_name(node: Node) -> str:
    """A readable name of what a node does: ``aten.linear.default``, ``get_attr``, ``placeholder``..."""
    if node.op == "call_function":
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            return f"{target.namespace}.{target._schema.name.split('::')[-1]}.{target._overloadname}"
        return getattr(target, "__name__", str(target))
    if node.op in ("call_module", "call_method"):
        return f"{node.op}:{node.target}"
    return node.op


def is_impure(node: Node) -> bool:
    """True for nodes with side effects or randomness (never removed, deduplicated or folded); attention called
    with a dropout probability of 0 is not random."""
    if node.op in ("placeholder", "output"):
        return True
    if node.op == "call_module":
        return True
    if node.op != "call_function":
        return False
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        if node.is_impure():
            return True
    else:
        if node.is_impure(impure_random=False) or target._schema.is_mutable:
            return True
        if torch.Tag.nondeterministic_seeded in getattr(target, "tags", ()) and not _no_dropout(node, target):
            return True
    name = op_name(node)
    return any(k in name for k in _IMPURE_NAMES)


def _no_dropout(node: Node, target: torch._ops.OpOverload) -> bool:
    """An op tagged random only for its dropout (attention) called with ``dropout_p=0``: a pure function."""
    names = [arg.name for arg in target._schema.arguments]
    if "dropout_p" not in names:
        return False
    i = names.index("dropout_p")
    dropout = node.args[i] if i < len(node.args) else node.kwargs.get("dropout_p", 0.0)
    return isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and dropout == 0


def _returns_alias(node: Node) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    return any(r.alias_info is not None for r in target._schema.returns)


def returns_alias(node: Node) -> bool:
    """Whether the node's op returns a view of (shares storage with) an input: views, alias, in-place ops."""
    return _returns_alias(node)


def alias_root(node: Node) -> Node:
    """The node owning the storage ``node`` views (walking up through views, the pieces of split / chunk / unbind,
    and in-place ops' returns)."""
    while True:
        if (node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], Node)
                and _returns_alias(node.args[0])):
            node = node.args[0]  # a piece of a view list (split, chunk, unbind...): the list's source below
        elif _returns_alias(node) and node.args and isinstance(node.args[0], Node):
            node = node.args[0]
        else:
            return node


def mutated_values(gm: GraphModule) -> set[Node]:
    """Nodes whose tensor is written in place somewhere in the graph, with every alias of that storage.

    The captured (pre-dispatch) IR keeps in-place ops such as ``copy_`` / ``fill_`` / ``index_put_``. Passes must not
    merge, fold or drop copies of these values: a read before the write and one after compute different things.
    """
    roots: set[Node] = set()
    for node in gm.graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        if not target._schema.is_mutable:
            continue
        for i, arg in enumerate(target._schema.arguments):
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, Node):
                roots.add(alias_root(value))
    if not roots:
        return set()
    return {n for n in gm.graph.nodes if alias_root(n) in roots}


def fake_mode_of(gm: GraphModule) -> Any:
    """The FakeTensorMode the graph's ``meta['val']`` tensors belong to (None when the graph has no metadata).

    The first fake tensor's mode (a graph's metadata comes from one mode): passes call this once per rewrite, so it
    must not scan the whole graph (that made the FP8 passes quadratic in the graph's size).
    """
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if val is not None:
            mode = detect_fake_mode(val if isinstance(val, (list, tuple)) else [val])
            if mode is not None:
                return mode
    return None


def fill_meta(gm: GraphModule, nodes: Iterable[Node] | None = None) -> int:
    """Compute ``meta['val']`` (a fake tensor) for nodes that lack it, from their inputs' metadata.

    Passes that create nodes call this so that later passes can read shapes and dtypes. Returns how many nodes got
    metadata.
    """
    mode = fake_mode_of(gm)
    if mode is None:
        return 0
    todo = [n for n in (nodes if nodes is not None else gm.graph.nodes) if "val" not in n.meta]
    filled = 0
    for node in todo:
        if node.op == "get_attr":
            attr = fetch_attr(gm, str(node.target))
            if isinstance(attr, torch.Tensor):
                node.meta["val"] = mode.from_tensor(attr, static_shapes=True)
                filled += 1
        elif node.op == "call_function":
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _val)
            target = node.target
            assert callable(target)
            with mode:
                node.meta["val"] = target(*args, **kwargs)
            filled += 1
    return filled


def _val(n: Node) -> Any:
    if "val" not in n.meta:
        raise ValueError(f"node {n.name} has no meta['val']; compute it before its users")
    return n.meta["val"]


def fetch_attr(gm: torch.nn.Module, target: str) -> Any:
    """Resolve a dotted ``get_attr`` target on a module."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def force_strides_op() -> Any:
    """Inductor's ``prims.inductor_force_stride_order(x, strides)``: the values of ``x`` with those strides (an
    identity for the math). Inductor realizes its input in that layout, and then reads it as stored; the prim is
    registered when ``torch._inductor.inductor_prims`` is imported, which this does."""
    from torch._inductor import inductor_prims  # noqa: F401  (registers the prim)

    return torch.ops.prims.inductor_force_stride_order.default


def tensor_meta(node: Any) -> torch.Tensor | None:
    """The fake tensor of a node (None for non-nodes and nodes without tensor metadata)."""
    if isinstance(node, Node):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return val
    return None


def static_shape(node: Any) -> tuple[int, ...] | None:
    """The node's shape if every dim is a plain integer, else None."""
    val = tensor_meta(node)
    if val is None:
        return None
    if not all(isinstance(s, int) for s in val.shape):
        return None  # int() of a SymInt would specialise the graph's shape env to the example size
    return tuple(val.shape)


def same_shape(a: Any, b: Any) -> bool:
    """True when two nodes (or a node and a shape) provably have the same shape, symbolic dims included."""
    ta, tb = tensor_meta(a), tensor_meta(b)
    sa = ta.shape if ta is not None else None
    sb = tb.shape if tb is not None else (None if isinstance(b, Node) else b)
    if sa is None or sb is None or len(sa) != len(sb):
        return False
    return all(_same_dim(x, y) for x, y in zip(sa, sb))


def _same_dim(x: Any, y: Any) -> bool:
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    try:
        return bool(torch.fx.experimental.symbolic_shapes.statically_known_true(x == y))
    except Exception:  # noqa: BLE001 - symbolic comparison of unrelated objects
        return str(x) == str(y)


def replace_node(old: Node, new: Any) -> None:
    """Point every user of ``old`` to ``new`` and erase ``old``."""
    old.replace_all_uses_with(new)
    old.graph.erase_node(old)


#: the metadata a node that replaces another inherits from it (where in the model it came from)
SOURCE_KEYS = ("stack_trace", "nn_module_stack")


def substitute(gm: GraphModule, old: Node, out: Node, new: Iterable[Node]) -> None:
    """Replace ``old`` by ``out``, the result of the freshly inserted nodes ``new`` (``out`` among them or one of
    their inputs): they inherit ``old``'s source location, get their fake-tensor metadata, and ``old`` is erased."""
    source = {key: val for key, val in old.meta.items() if key in SOURCE_KEYS}
    new = list(new)
    for node in new:
        node.meta.update(source)
    fill_meta(gm, new)
    replace_node(old, out)


def getitem_users(node: Node) -> list[Node]:
    return [u for u in node.users if u.op == "call_function" and u.target is operator.getitem]


def node_count(gm: GraphModule) -> int:
    return len(gm.graph.nodes)


def op_histogram(gm: GraphModule) -> dict[str, int]:
    """How many call_function nodes of each op the graph holds."""
    hist: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function":
            hist[op_name(n)] = hist.get(op_name(n), 0) + 1
    return dict(sorted(hist.items()))


def finish(gm: GraphModule) -> GraphModule:
    """Lint and regenerate code after an in-place rewrite."""
    gm.graph.lint()
    gm.recompile()
    return gm
