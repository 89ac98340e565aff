"""``inductor``: ``torch.compile`` (TorchInductor) of the optimised graph module."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.backends.base import Availability, Backend, register_backend
from recfx.passes.base import PassContext
from recfx.passes.pipelines import INDUCTOR_LOWERINGS, lowering_options

_INDUCTOR_OPTIONS = ("mode", "options", "dynamic", "fullgraph")
#: Optional lowerings of the Inductor backends, each on unless its backend option is False.
LOWERING_CHOICES = lowering_options(INDUCTOR_LOWERINGS)


def inductor_availability() -> Availability:
    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
        except ImportError:
            return Availability(False, "CUDA is present but triton is not installed (pip install 'recfx[gpu]')")
        return Availability(True)
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return Availability(False, "no C++ compiler (g++/clang++) for Inductor's CPU code generation")
    return Availability(True)


@register_backend("inductor")
class InductorBackend(Backend):
    priority = 10
    description = "torch.compile (TorchInductor) of the optimised graph: fused Triton (GPU) or C++ (CPU) kernels"
    #: then GQA attention folded, attention over a few tokens as fused math and MoE layers routed
    #: (``backend_options={"fold_gqa": False}`` keeps the repeated K/V, ``{"tiny_attention": False}`` the SDPA
    #: kernel, ``{"route_moe": False}`` the dense all-experts sum)
    lowering = INDUCTOR_LOWERINGS

    def availability(self) -> Availability:
        return inductor_availability()

    def inductor_options(self, ctx: PassContext) -> dict[str, Any]:
        """The user's backend options that go to ``torch.compile`` (subclasses may take more and remove them)."""
        options = self.options(ctx, (*_INDUCTOR_OPTIONS, *LOWERING_CHOICES))
        for key in LOWERING_CHOICES:
            options.pop(key, None)
        return options

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        options = self.inductor_options(ctx)
        dynamic = options.pop("dynamic", bool(ctx.dynamic_dims))
        compiled = torch.compile(gm, backend="inductor", dynamic=dynamic, **options)
        if dynamic:
            _warm_up_dynamic(compiled, ctx)
        return compiled


def _warm_up_dynamic(compiled: Callable[..., Any], ctx: PassContext) -> None:
    """Compile once on copies of the example inputs with their dynamic dims marked.

    ``torch.compile(dynamic=True)`` alone still specialises the first call's sizes for a graph module from
    ``torch.export``, so every new batch size would recompile. Sizes 0 and 1 are still specialised by torch
    (one more compile the first time a batch of 1 arrives).
    """
    captured = ctx.captured
    if captured is None:
        return
    args = [x.clone() for x in ctx.example_inputs]
    for spec, x in zip(captured.input_specs, args):
        for d, size in enumerate(spec.shape):
            if isinstance(size, str):
                torch._dynamo.mark_dynamic(x, d)
    with torch.inference_mode():
        compiled(*args)
