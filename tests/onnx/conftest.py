"""Shared, cached compiles and exports of the reference models (each is expensive: compile once per session)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import recfx
from recfx.models import get_model
from recfx.onnx import OnnxExport, OnnxExportConfig, export_onnx

#: Example batch for capture (>= 2 keeps the batch dynamic) and the batches every ORT test runs.
EXAMPLE_BATCH = 2
BATCHES = (1, 3, 8)


@dataclasses.dataclass
class ModelCache:
    """Compiles and exports by key, made on first use and kept for the session."""

    folder: Path
    batches: tuple[int, ...] = BATCHES
    compiled: dict[tuple[Any, ...], Any] = dataclasses.field(default_factory=dict)
    exports: dict[tuple[Any, ...], OnnxExport] = dataclasses.field(default_factory=dict)

    def model(self, name: str) -> tuple[Any, torch.nn.Module, tuple[torch.Tensor, ...]]:
        spec = get_model(name)
        return spec, spec.build(seed=0), spec.example_inputs(EXAMPLE_BATCH, seed=0)

    def calibration(self, name: str) -> list[tuple[torch.Tensor, ...]]:
        spec = get_model(name)
        return [spec.example_inputs(4, seed=100 + i) for i in range(3)]

    def compile(self, name: str, backend: str, static: bool = False) -> Any:
        key = (name, backend, static)
        if key not in self.compiled:
            _, model, inputs = self.model(name)
            kw: dict[str, Any] = {}
            if backend.endswith("fp8"):
                activation = "static_per_tensor" if static else "dynamic_per_token"
                kw = {"quant": recfx.QuantConfig(activation=activation, progress=False, eval_batches=1),
                      "calibration": self.calibration(name) if static else None}
            self.compiled[key] = (model, recfx.compile(model, inputs, backend=backend, **kw))
        return self.compiled[key]

    def export(self, name: str, fp8: bool, ksa_as_ops: bool = False, static: bool = False) -> OnnxExport:
        key = (name, fp8, ksa_as_ops, static)
        if key not in self.exports:
            _, compiled = self.compile(name, "eager-fp8" if fp8 else "eager", static)
            _, _, inputs = self.model(name)
            tag = f"{name}-{'fp8' if fp8 else 'fp32'}{'-ops' if ksa_as_ops else ''}{'-static' if static else ''}"
            config = OnnxExportConfig(fp8=fp8, ksa_as_ops=ksa_as_ops, model_name=name)
            self.exports[key] = export_onnx(compiled, inputs, self.folder / f"{tag}.onnx", config)
        return self.exports[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("onnx_models"))


def _export_module(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
                   config: OnnxExportConfig | None = None, dynamic_dims: dict[str, dict[int, str]] | None = None
                   ) -> tuple[Any, Any, dict[str, int]]:
    """Capture ``module`` (no compile passes), export it, and open it on ONNX Runtime when it has no plugin node.

    Returns:
        (lint report, OrtRunner or None, op histogram).
    """
    from recfx.frontend import capture
    from recfx.onnx import onnx_model
    from recfx.onnx.session import OrtRunner
    from recfx.onnx.write import write_model

    config = config or OnnxExportConfig()
    captured = capture(module.eval(), inputs, dynamic_dims=dynamic_dims)
    model = onnx_model(captured.graph_module, captured.example_inputs, captured.input_specs, captured.output_specs,
                       config)
    lint, histogram = write_model(model, path, lint=config.lint)
    runner = None
    if not any("::" in op for op in histogram):
        runner = OrtRunner(path, [s.name for s in captured.input_specs], [s.name for s in captured.output_specs],
                           out_spec=getattr(captured.graph_module, "_out_spec", None))
    return lint, runner, histogram


@pytest.fixture
def export_module() -> Any:
    """``export_module(module, inputs, path, config=None, dynamic_dims=None) -> (lint, runner, histogram)``."""
    return _export_module
