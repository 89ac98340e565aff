"""The ``trt`` and ``trt-fp8`` backends: the final graph compiled in process by Torch-TensorRT (see ``dynamo.py``).

``trt-fp8`` runs recfx's FP8 passes first; its ``recfx::fp8_linear`` / ``quantize_fp8`` / ``dequantize_fp8`` nodes
become TensorRT Q/DQ layers and FP8 GEMMs (``converters.py``); ``recfx::ksa_attention`` becomes a plugin in both.

``backend_options``: ``require_full_graph`` (False: nodes TensorRT cannot take run in PyTorch and are listed in the
compile report; True: that is an error), ``profile`` (``{symbol: (min, opt, max)}``; default ``[1, example,
4 * example]`` per dynamic dim), ``optimization_level`` (0..5, default 3), ``timing_cache`` (a file),
``engine_cache_dir`` (reuse built engines), ``min_block_size`` (default 1); ``via`` (``"dynamo"``: Torch-TensorRT in
process; ``"onnx"``: export, ``build_engine`` and a plan runner, the deployment path, see ``onnx_path.py``) with
its ``cache_dir`` and ``cuda_graph_batches``.

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

#: Options that only one ``via`` takes.
ONLY_FOR = {"dynamo": ("require_full_graph", "engine_cache_dir", "min_block_size"),
            "onnx": ("cache_dir", "cuda_graph_batches")}


def check_via(name: str, options: dict[str, Any]) -> str:
    """``options["via"]`` (default ``"dynamo"``), after checking that no option of the other path is given.

    Raises:
        ValueError: an unknown ``via``, or an option the chosen path would ignore.
    """
    via = options.get("via", "dynamo")
    if via not in ONLY_FOR:
        raise ValueError(f"{name} backend_options via must be 'dynamo' or 'onnx', got {via!r}")
    ignored = sorted(k for other, keys in ONLY_FOR.items() if other != via for k in keys if k in options)
    if ignored:
        other = "onnx" if via == "dynamo" else "dynamo"
        raise ValueError(f"{name} backend_options {ignored} apply only with via={other!r}; with via={via!r} they "
                         "would be ignored")
    return str(via)


@register_backend("trt")
class TensorRTBackend(Backend):
    priority = 9  # below inductor(-fp8) and cuda-fp8 until a first run on TensorRT (docs/tensorrt.md); then raise it
    description = "Torch-TensorRT in process (TensorRT engines, KSA as a plugin, PyTorch fallback listed in the report)"

    def availability(self) -> Availability:
        return torch_tensorrt_availability()

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        from recfx.backends.tensorrt.dynamo import TensorRTReport, compile_graph

        options = self.options(ctx, OPTIONS)
        captured = ctx.captured
        if captured is None:
            raise ValueError(f"the {self.name} backend needs the captured graph's input specs "
                             "(ctx.captured); call it through recfx.compile")
        report = TensorRTReport()
        ctx.report_sections["tensorrt"] = report
        if check_via(self.name, options) == "onnx":
            from recfx.backends.tensorrt.onnx_path import compile_via_onnx

            return compile_via_onnx(gm, tuple(ctx.example_inputs), captured, self.fp8, options, report)
        return compile_graph(gm, tuple(ctx.example_inputs), captured.input_specs, options, report)


@register_backend("trt-fp8")
class TensorRTFp8Backend(TensorRTBackend):
    fp8 = True
    priority = 9  # below inductor(-fp8) and cuda-fp8 until a first run on TensorRT (docs/tensorrt.md); then raise it
    description = "FP8 (E4M3) quantization, then Torch-TensorRT: Q/DQ layers and FP8 GEMMs in a strongly typed network"
