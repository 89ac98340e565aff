"""Common-subexpression elimination."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import finish, is_impure, mutated_values

log = logging.getLogger(__name__)


def _key(value: Any) -> Any:
    """A hashable key for an argument: nodes by identity, lists as tuples, dtypes/devices as themselves."""
    if isinstance(value, Node):
        return ("node", id(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    if isinstance(value, float) and value != value:  # NaN literals never compare equal
        return ("nan", id(value))
    return (type(value).__name__, value)


@register_pass("cse", stage="canonicalize")
def common_subexpression_elimination(gm: GraphModule) -> PassResult:
    """No two pure nodes compute the same op on the same inputs (the later one is replaced by the earlier).

    Values written in place (and their aliases) are left alone.
    """
    seen: dict[Any, Node] = {}
    replaced = 0
    mutated = mutated_values(gm)
    for node in list(gm.graph.nodes):
        if node in mutated or any(i in mutated for i in node.all_input_nodes):
            continue  # a value written in place: identical-looking reads may see different contents
        if node.op == "get_attr":
            key: Any = ("get_attr", node.target)
        elif node.op == "call_function" and not is_impure(node):
            key = (node.target, _key(node.args), _key(node.kwargs))
        else:
            continue
        prev = seen.get(key)
        if prev is None:
            seen[key] = node
            continue
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        replaced += 1
    if replaced:
        finish(gm)
    log.debug("cse merged %d nodes", replaced)
    return PassResult(gm, modified=replaced > 0, changed_nodes=replaced)
