"""The ``trt`` and ``trt-fp8`` backends: the final graph compiled in process by Torch-TensorRT (see ``dynamo.py``).

``trt-fp8`` runs recfx's FP8 passes first; its ``recfx::fp8_linear`` / ``quantize_fp8`` / ``dequantize_fp8`` nodes
become TensorRT Q/DQ layers and FP8 GEMMs (``converters.py``); ``recfx::ksa_attention`` becomes a plugin in both.

``backend_options``: ``require_full_graph`` (False: nodes TensorRT cannot take run in PyTorch and are listed in the
compile report; True: that is an error), ``profile`` (``{symbol: (min, opt, max)}``; default ``[1, example,
4 * example]`` per dynamic dim), ``optimization_level`` (0..5, default 3), ``timing_cache`` (a file),
``engine_cache_dir`` (reuse built engines), ``min_block_size`` (default 1).

Without TensorRT and Torch-TensorRT (and a CUDA GPU) both raise ``BackendUnavailableError`` saying what to
install; ``backend="auto"`` skips them with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.fx import GraphModule

from recfx.backends.base import Availability, Backend, register_backend
from recfx.backends.tensorrt.availability import torch_tensorrt_availability
from recfx.backends.tensorrt.dynamo import OPTIONS
from recfx.passes.base import PassContext


@register_backend("trt")
class TensorRTBackend(Backend):
    priority = 13  # auto prefers TensorRT where it runs (the design); it has not run anywhere yet: docs/tensorrt.md
    description = "Torch-TensorRT in process (TensorRT engines, KSA as a plugin, PyTorch fallback listed in the report)"

    def availability(self) -> Availability:
        return torch_tensorrt_availability()

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        from recfx.backends.tensorrt.dynamo import TensorRTReport, compile_graph

        options = self.options(ctx, OPTIONS)
        captured = ctx.extras.get("captured")
        if captured is None:
            raise ValueError(f"the {self.name} backend needs the captured graph's input specs "
                             "(ctx.extras['captured']); call it through recfx.compile")
        report = TensorRTReport()
        ctx.extras.setdefault("report_sections", {})["tensorrt"] = report
        return compile_graph(gm, tuple(ctx.example_inputs), captured.input_specs, options, report)


@register_backend("trt-fp8")
class TensorRTFp8Backend(TensorRTBackend):
    fp8 = True
    priority = 13  # auto prefers TensorRT where it runs (the design); it has not run anywhere yet: docs/tensorrt.md
    description = "FP8 (E4M3) quantization, then Torch-TensorRT: Q/DQ layers and FP8 GEMMs in a strongly typed network"
