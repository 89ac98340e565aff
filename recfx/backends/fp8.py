"""``eager-fp8`` and ``inductor-fp8``: the FP8 post-training quantization passes, then the eager / Inductor backend.

Both run ``recfx.passes.quant.fp8_pipeline`` (Backend.passes does, because ``fp8 = True``): the graph they get holds
``recfx::fp8_linear`` GEMMs with pre-quantized FP8 weights.
"""

from __future__ import annotations

from recfx.backends.base import register_backend
from recfx.backends.eager import EagerBackend
from recfx.backends.inductor import InductorBackend


@register_backend("eager-fp8")
class EagerFp8Backend(EagerBackend):
    fp8 = True
    priority = 1
    description = "FP8 (E4M3) post-training quantization, then op-by-op PyTorch (torch._scaled_mm GEMMs; runs anywhere)"


@register_backend("inductor-fp8")
class InductorFp8Backend(InductorBackend):
    fp8 = True
    priority = 11
    description = "FP8 (E4M3) post-training quantization, then torch.compile (FP8 GEMMs stay recfx:: ops)"
