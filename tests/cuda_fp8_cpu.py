"""A test-only backend: ``cuda-fp8``'s passes checked on a machine without a GPU.

``cuda-fp8`` needs an FP8 GPU, so CI cannot compile with it; but what its passes rewrite (FP8 quantization, the
``_scaled_mm`` lowering with its defaults ``realize_permuted`` and ``silu_quant_kernel``, tiny attention, GQA folding)
runs op by op on the CPU: ``torch._scaled_mm`` and the recfx ops have CPU paths. Importing this module registers
``cuda-fp8-passes-fp8``, used by the fuzzer and the model corpus (the ``-fp8`` suffix gives it their FP8 thresholds).
Inductor's own code generation for the GPU is not what this checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from recfx.backends import register_backend
from recfx.backends.base import Availability
from recfx.backends.eager import EagerBackend
from recfx.backends.fp8 import CudaFp8Backend
from recfx.passes import PassContext

NAME = "cuda-fp8-passes-fp8"


@register_backend(NAME)
class CudaFp8PassesOnCpu(CudaFp8Backend):
    """``cuda-fp8``'s whole pass pipeline with its defaults, then the lowered graph run op by op (any device)."""

    priority = -100
    description = "tests only: cuda-fp8's passes, the lowered graph run op by op (CPU)"

    def availability(self) -> Availability:
        return Availability(True, "")

    def compile(self, gm: torch.fx.GraphModule, ctx: PassContext) -> Callable[..., Any]:
        return EagerBackend().compile(gm, ctx)
