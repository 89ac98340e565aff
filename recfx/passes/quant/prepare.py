"""``fp8_prepare``: an observer (``call_module``) on the activation input of every annotated linear."""

from __future__ import annotations

import logging

from torch.fx import GraphModule, Node

from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.state import (
    OBSERVER_PREFIX,
    ActivationObserver,
    node_arg,
    observers,
    plans,
)
from recfx.passes.utils import finish

log = logging.getLogger(__name__)


def _unobserved(gm: GraphModule) -> list[str]:
    obs = observers(gm)
    return [f"{n.name}: activation input is not an observer" for n, _ in plans(gm)
            if not (node_arg(n, 0).op == "call_module" and node_arg(n, 0).target in obs)]


@register_pass("fp8_prepare", stage="quantize", postcondition=_unobserved)
class Fp8Prepare:
    """Every annotated linear reads its activation through an ActivationObserver (one per distinct tensor)."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        by_input: dict[Node, list[Node]] = {}
        for node, _ in plans(gm):
            by_input.setdefault(node_arg(node, 0), []).append(node)
        for i, (x, linears) in enumerate(by_input.items()):
            name = f"{OBSERVER_PREFIX}{i}"
            gm.add_submodule(name, ActivationObserver([n.meta["recfx_fp8"].name for n in linears]))
            with gm.graph.inserting_after(x):
                obs = gm.graph.call_module(name, (x,))
            obs.meta["val"] = x.meta.get("val")
            for node in linears:
                node.replace_input_with(x, obs)
                node.meta["recfx_fp8"].observer = name
        if by_input:
            finish(gm)
        log.info("fp8_prepare: %d observers for %d linears", len(by_input), sum(map(len, by_input.values())))
        return PassResult(gm, modified=bool(by_input), changed_nodes=len(by_input))
