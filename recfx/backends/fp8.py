"""The FP8 backends: ``eager-fp8`` (the reference), ``inductor-fp8`` and ``cuda-fp8`` (the fast GPU path).

All of them run ``recfx.passes.quant.fp8_pipeline`` (Backend.passes does, because ``fp8 = True``): the graph they get
holds ``recfx::fp8_linear`` GEMMs with pre-quantized FP8 weights. ``eager-fp8`` and ``inductor-fp8`` run those ops
as they are (quantization inside an opaque op: correct, slow). ``cuda-fp8`` first lowers them to aten quantization
and ``torch._scaled_mm`` (``fp8_lower_scaled_mm``), so that Inductor fuses each activation's per-token quantization
into the kernel that produces it and cuBLASLt applies the scales in the GEMM's epilogue; calls at small batch sizes
replay CUDA graphs (``recfx.backends.cuda_graphs``).

``cuda-fp8``'s ``backend_options``: Inductor's (``mode``, ``options``, ``dynamic``, ``fullgraph``), recfx's Inductor
heuristics (``persistent_rows``, ``persistent_layout``, ``regions``), the lowerings that can be switched off
(``fold_gqa``, ``tiny_attention``, ``route_moe``), the FP8 GEMM lowering's (``fast_accum``, default True;
``exact_quant``, default False; ``realize_permuted`` and ``silu_quant_kernel``, default True, see
:attr:`CudaFp8Backend.pass_defaults`: ``recfx.passes.quant.lower_scaled_mm``), ``fp8_attention`` and
``cuda_graph_batches`` (default ``(1, 2, 4, 8)``; ``()`` turns CUDA graphs off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch.fx import GraphModule

from recfx.backends.base import Availability, register_backend
from recfx.backends.cuda_graphs import DEFAULT_BATCHES, BatchGraphs
from recfx.backends.eager import EagerBackend
from recfx.backends.inductor import _INDUCTOR_OPTIONS, HEURISTIC_OPTIONS, LOWERING_CHOICES, InductorBackend
from recfx.passes.base import PassContext
from recfx.passes.fp8_attention import OPTIONS as ATTENTION_OPTIONS
from recfx.passes.pipelines import CUDA_FP8_LOWERINGS
from recfx.passes.quant.lower_scaled_mm import OPTIONS as LOWERING_OPTIONS

#: ``backend_options`` of ``cuda-fp8`` besides Inductor's and the lowering's: the batch sizes whose calls replay
#: per-shape CUDA graphs (``()`` for none).
GRAPH_OPTIONS = ("cuda_graph_batches",)
#: FP8 tensor cores: Ada (8.9) and Hopper (9.0) and later.
FP8_CAPABILITY = (8, 9)


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


@dataclasses.dataclass
class BackendDefaults:
    """The pass options a backend set for this compile where the user gave none (report section
    ``backend_defaults``): what ran, beside the options the user passed."""

    options: dict[str, Any]

    def render(self) -> str:
        return "pass options in force: " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.options)


def fp8_gpu_availability() -> Availability:
    """A CUDA GPU with FP8 tensor cores (compute capability >= 8.9) and triton."""
    if not torch.cuda.is_available():
        return Availability(False, "needs a CUDA GPU with FP8 tensor cores (sm_89 or newer); none is visible to torch "
                                   "(on a CPU use 'eager-fp8' or 'ort-fp8': FP8 is emulated there, for accuracy "
                                   "checks, not speed)")
    cap = torch.cuda.get_device_capability()
    if cap < FP8_CAPABILITY:
        name = torch.cuda.get_device_name()
        return Availability(False, f"{name} (sm_{cap[0]}{cap[1]}) has no FP8 tensor cores; needs sm_89 or newer")
    return InductorBackend().availability()


@register_backend("cuda-fp8")
class CudaFp8Backend(InductorBackend):
    fp8 = True
    priority = 12
    description = ("FP8 on the GPU: per-token quantization fused into producers by Inductor, cuBLASLt row-wise FP8 "
                   "GEMMs with the scales in the epilogue")
    lowering = CUDA_FP8_LOWERINGS
    #: whole-row reductions also through permutes (the o_proj input's quantization, tiny attention's scores):
    #: 1.03-1.04x on onerec-1b at batches 8 and 32 (H100, BENCHMARKS.md run 10)
    persistent_layout = "any"
    #: pass options this backend turns on unless the user says otherwise: attention outputs realized as contiguous
    #: rows before their quantization, SwiGLU products quantized by recfx::silu_mul_fp8. On onerec-1b cut to two
    #: layers at batch 32 (H100, BENCHMARKS.md run 11, the op's kernel then in 3 x 2,048 chunks; the padded block it
    #: uses now was timed only alone): GPU time 32.8 -> 30.8 ms with both, 1.4-1.6 ms of it beyond the attention
    #: kernel's run-to-run variation; p50 (uncaptured, host included) 36.3 -> 35.5 ms, where realize_permuted alone
    #: gave 35.2 ms. The full model has not run with them.
    pass_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {"realize_permuted": True, "silu_quant_kernel": True})

    def availability(self) -> Availability:
        return fp8_gpu_availability()

    def passes(self, ctx: PassContext) -> list[str]:
        defaults = dict(self.pass_defaults)
        if ctx.backend_options.get("exact_quant"):  # the op has the float32 recipe only: exact_quant keeps aten ops
            defaults["silu_quant_kernel"] = False
        ctx.backend_options = {**defaults, **ctx.backend_options}
        ctx.report_sections["backend_defaults"] = BackendDefaults(
            {k: ctx.backend_options[k] for k in defaults})
        return super().passes(ctx)

    def inductor_options(self, ctx: PassContext) -> dict[str, Any]:
        extra = (*HEURISTIC_OPTIONS, *LOWERING_CHOICES, *LOWERING_OPTIONS, *ATTENTION_OPTIONS, *GRAPH_OPTIONS)
        options = self.options(ctx, (*_INDUCTOR_OPTIONS, *extra))
        for key in extra:
            options.pop(key, None)
        return options

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        compiled = super().compile(gm, ctx)
        options = ctx.backend_options
        batches = options.get("cuda_graph_batches", DEFAULT_BATCHES)
        if not batches:  # cuda_graph_batches=() turns them off
            return compiled
        runner = BatchGraphs(compiled, tuple(batches))
        ctx.report_sections["cuda_graphs"] = runner.stats
        return runner
