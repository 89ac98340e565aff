"""Constant folding of pure subgraphs whose inputs are all model constants."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import fetch_attr, finish, is_impure, mutated_values

log = logging.getLogger(__name__)

#: Ops in these namespaces are never folded: folding a dequantize of a quantized weight would undo quantization.
NEVER_FOLD_NAMESPACES = frozenset({"recfx", "quantized_decomposed", "quantized"})
#: A folded constant may not be larger than this many elements unless its inputs were as large already.
MAX_NEW_CONSTANT_NUMEL = 1 << 20


def _is_view_of_attr(node: Node) -> bool:
    """Views of a parameter are free at run time; folding them would only duplicate storage."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return False
    aliasing = any(a.alias_info is not None and not a.alias_info.is_write for a in target._schema.returns)
    return aliasing and all(i.op == "get_attr" for i in node.all_input_nodes)


def _foldable(node: Node, constant: set[Node]) -> bool:
    if node.op != "call_function" or is_impure(node):
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload) and target.namespace in NEVER_FOLD_NAMESPACES:
        return False
    return all(i in constant for i in node.all_input_nodes) and "val" in node.meta and _static(node)


def _static(node: Node) -> bool:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return False
    return all(isinstance(s, int) for s in val.shape)


def _input_numel(node: Node, values: dict[Node, Any]) -> int:
    return sum(values[i].numel() for i in node.all_input_nodes if isinstance(values.get(i), torch.Tensor))


@register_pass("constant_folding", stage="canonicalize")
def constant_folding(gm: GraphModule) -> PassResult:
    """No pure node computes only from constants (except views of parameters, anything through recfx ops, and
    values written in place)."""
    constant: set[Node] = set()
    values: dict[Node, Any] = {}
    mutated = mutated_values(gm)  # written in place later: their value at fold time would be wrong
    for node in gm.graph.nodes:
        if node in mutated:
            continue
        if node.op == "get_attr":
            constant.add(node)
            values[node] = fetch_attr(gm, str(node.target))
        elif _foldable(node, constant):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
            with torch.no_grad():
                values[node] = node.target(*args, **kwargs)
            constant.add(node)
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node not in constant or _is_view_of_attr(node):
            continue
        if all(u in constant for u in node.users):
            continue  # an intermediate: its constant users are folded instead
        value = values[node]
        if not isinstance(value, torch.Tensor):
            continue
        if value.numel() > max(MAX_NEW_CONSTANT_NUMEL, _input_numel(node, values)):
            continue
        name = _fresh_name(gm, f"_folded_{node.name}")
        gm.register_buffer(name, value.detach().clone().contiguous())
        with gm.graph.inserting_before(node):
            new = gm.graph.get_attr(name)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code(is_impure_node=is_impure)
        finish(gm)
    log.debug("constant folding folded %d nodes", folded)
    return PassResult(gm, modified=folded > 0, changed_nodes=folded)


def _fresh_name(gm: GraphModule, base: str) -> str:
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name
