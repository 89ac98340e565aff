"""Dead-code elimination."""

from __future__ import annotations

import logging

from torch.fx import GraphModule

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import finish, is_impure, op_name

log = logging.getLogger(__name__)


def _dead_nodes(gm: GraphModule) -> list[str]:
    return [f"{n.name} ({op_name(n)})" for n in gm.graph.nodes
            if not n.users and not is_impure(n) and n.op in ("call_function", "get_attr")]


@register_pass("dce", stage="canonicalize", postcondition=_dead_nodes)
def dead_code_elimination(gm: GraphModule) -> PassResult:
    """Every remaining pure node is used by the output; side-effecting nodes (asserts, guards) are kept."""
    before = len(gm.graph.nodes)
    gm.graph.eliminate_dead_code(is_impure_node=is_impure)
    removed = before - len(gm.graph.nodes)
    if removed:
        gm.delete_all_unused_submodules()
        finish(gm)
    log.debug("dce removed %d nodes", removed)
    return PassResult(gm, modified=removed > 0, changed_nodes=removed)


@register_pass("dce_final", stage="canonicalize", postcondition=_dead_nodes)
def final_dead_code_elimination(gm: GraphModule) -> PassResult:
    """Every remaining pure node is used (run again after the rewrites of the stage)."""
    return dead_code_elimination(gm)
