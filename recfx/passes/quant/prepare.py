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
from recfx.passes.utils import finish, mutated_values

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
        # A tensor written in place (or an alias of one) holds different values at different points: each linear
        # reading it gets its own observer, right before it, so that calibration sees what the linear reads.
        mutated = mutated_values(gm)
        by_input: dict[tuple[Node, Node | None], list[Node]] = {}
        for node, _ in plans(gm):
            x = node_arg(node, 0)
            by_input.setdefault((x, node if x in mutated else None), []).append(node)
        for i, ((x, reader), linears) in enumerate(by_input.items()):
            name = f"{OBSERVER_PREFIX}{i}"
            gm.add_submodule(name, ActivationObserver([n.meta["recfx_fp8"].name for n in linears]))
            with gm.graph.inserting_after(x) if reader is None else gm.graph.inserting_before(reader):
                obs = gm.graph.call_module(name, (x,))
            obs.meta["val"] = x.meta.get("val")
            for node in linears:
                node.replace_input_with(x, obs)
                node.meta["recfx_fp8"].observer = name
        if by_input:
            finish(gm)
        log.info("fp8_prepare: %d observers for %d linears", len(by_input), sum(map(len, by_input.values())))
        return PassResult(gm, modified=bool(by_input), changed_nodes=len(by_input))
