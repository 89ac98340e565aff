"""``backend_options={"via": "onnx"}``: the ``trt`` backends through the deployment path instead of Torch-TensorRT.

The final graph is exported to ONNX (FP8 Q/DQ for ``trt-fp8``, ``recfx::ksa_attention`` as the ``KsaAttention``
plugin node), linted in strict mode, built into a plan (:func:`build.build_engine`) and run by
:class:`runtime.PlanRunner`, so that ``recfx.compile`` returns the usual ``CompiledModule`` around the very engine
``recfx build-engine`` would deploy. The ONNX file and the plan are cached under ``$RECFX_CACHE_DIR/trt``: the
ONNX by the graph key of the ``ort`` backends (with its content manifest), the plan by :func:`cache.engine_key`
(ONNX bytes, profiles, build options, TensorRT version, GPU); a cached plan is reused only when its manifest
records that key and its bytes match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.backends.tensorrt.build import EngineBuildConfig, build_engine, expected_key, plan_profiles
from recfx.backends.tensorrt.dynamo import TensorRTReport, example_sizes
from recfx.backends.tensorrt.runtime import read_manifest
from recfx.frontend.capture import TensorSpec

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$RECFX_CACHE_DIR/trt``, else ``~/.cache/recfx/trt``."""
    root = os.environ.get("RECFX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "recfx")
    return Path(root) / "trt"


def export(gm: GraphModule, inputs: tuple[torch.Tensor, ...], specs: Any, fp8: bool, folder: Path) -> Path:
    """The graph's ONNX file in ``folder`` (exported and linted strictly unless a verified copy is cached)."""
    from recfx.backends.ort import cached_digest, graph_key, write_manifest
    from recfx.onnx.config import OnnxExportConfig
    from recfx.onnx.export import onnx_model
    from recfx.onnx.write import write_model

    config = OnnxExportConfig(opset=21, fp8=fp8, ksa_as_ops=False, optimize=True, lint="off")
    key = graph_key(gm, specs.input_specs, config.to_dict())
    path = folder / f"{key[:32]}.onnx"
    if cached_digest(path, key) is None:
        model = onnx_model(gm, inputs, specs.input_specs, specs.output_specs, config)
        write_model(model, path, lint="strict")
        write_manifest(path, key)
    return path


def plan_is_current(plan: Path, key: str) -> bool:
    try:
        return read_manifest(plan).get("key") == key
    except (OSError, ValueError):
        return False


def compile_via_onnx(gm: GraphModule, inputs: tuple[torch.Tensor, ...], captured: Any, fp8: bool,
                     options: Mapping[str, Any], report: TensorRTReport) -> Callable[..., Any]:
    """A callable running ``gm``'s plan; outputs in ``gm``'s structure."""
    from recfx.backends.tensorrt.runtime import load_plan

    folder = Path(options.get("cache_dir") or default_cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export(gm, inputs, captured, fp8, folder)
    ranges = options.get("profile")
    config = EngineBuildConfig(profiles=(("p0", ranges),) if ranges else (),
                               examples=example_sizes(captured.input_specs, inputs),
                               optimization_level=int(options.get("optimization_level", 3)),
                               timing_cache=options.get("timing_cache") or str(folder / "timing.cache"))
    profiles = plan_profiles(onnx_path, config)
    report.profile = profiles[0]
    plan = onnx_path.with_suffix(".plan")
    key = expected_key(onnx_path, profiles, config)
    if plan_is_current(plan, key):
        log.info("trt: reusing %s", plan)
    else:
        build_engine(onnx_path, plan, config)
    runner = load_plan(plan, tuple(options.get("cuda_graph_batches", ())))
    return PlanCall(runner, captured.input_specs, getattr(gm, "_out_spec", None))


class PlanCall:
    """Calls a plan with the graph's inputs and returns its outputs in the graph's structure."""

    def __init__(self, runner: Callable[..., Any], input_specs: Sequence[TensorSpec], out_spec: Any) -> None:
        names = getattr(runner, "input_names", None) or getattr(getattr(runner, "fn", None), "input_names", None)
        expected = [s.name for s in input_specs]
        if names is not None and list(names) != expected:
            raise ValueError(f"the plan's inputs are {list(names)}, the graph's {expected}; build it again")
        self.runner, self.out_spec = runner, out_spec

    def __call__(self, *inputs: torch.Tensor) -> Any:
        outputs = list(self.runner(*inputs))
        if self.out_spec is not None:
            return torch.utils._pytree.tree_unflatten(outputs, self.out_spec)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
