"""``eager``: run the optimised graph module as is, in PyTorch (the reference backend)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.fx import GraphModule

from recfx.backends.base import Backend, register_backend
from recfx.ops.mode import reference_kernels
from recfx.passes.base import PassContext


@register_backend("eager")
class EagerBackend(Backend):
    priority = 0
    description = "runs the optimised FX graph op by op in PyTorch, recfx ops on their references (runs anywhere)"

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            with reference_kernels():
                return gm(*args)

        return run
