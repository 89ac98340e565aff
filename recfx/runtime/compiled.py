"""``CompiledModule``: the ``nn.Module`` users call after ``recfx.compile``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.frontend.capture import TensorSpec
from recfx.runtime.report import CompileReport


class CompiledModule(torch.nn.Module):
    """A compiled model: call it like the original (same positional tensor inputs, same outputs).

    Attributes:
        graph_module: the optimised FX graph (parameters, folded constants and quantized weights as attributes).
        report: the :class:`~recfx.runtime.report.CompileReport`.
        input_specs / output_specs: names, shapes (dynamic dims by name) and dtypes.
    """

    def __init__(self, graph_module: GraphModule, runner: Callable[..., Any], input_specs: list[TensorSpec],
                 output_specs: list[TensorSpec], report: CompileReport) -> None:
        super().__init__()
        self.graph_module = graph_module
        self._runner = runner
        self.input_specs = input_specs
        self.output_specs = output_specs
        self.report = report
        self.training = False  # inference only (the exported graph module refuses train()/eval() calls)

    def train(self, mode: bool = True) -> CompiledModule:
        """Compiled modules are inference-only: ``eval()`` is a no-op, ``train()`` raises.

        Raises:
            RuntimeError: ``mode=True``.
        """
        if mode:
            raise RuntimeError("a recfx CompiledModule is inference-only; train the original model and compile it "
                               "again")
        return self

    @property
    def backend(self) -> str:
        return self.report.backend

    def check_inputs(self, args: tuple[Any, ...]) -> None:
        """Raise a ``TypeError``/``ValueError`` naming the input and what was expected when inputs do not fit
        (count, type, dtype, device, rank, static dims)."""
        if len(args) != len(self.input_specs):
            names = ", ".join(str(s) for s in self.input_specs)
            raise TypeError(f"expected {len(self.input_specs)} tensor inputs ({names}), got {len(args)}")
        for spec, x in zip(self.input_specs, args):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"input {spec.name!r} must be a tensor, got {type(x).__name__}")
            if x.dtype != spec.dtype:
                raise TypeError(f"input {spec.name!r} must be {spec.dtype}, got {x.dtype} (expected {spec})")
            if x.device.type == "meta":
                raise ValueError(f"input {spec.name!r} is a meta tensor (shape only, no data); a compiled module "
                                 f"computes values: pass a real tensor on {spec.device or 'the compiled device'}")
            if spec.device is not None and x.device != spec.device:
                raise ValueError(f"input {spec.name!r} is on {x.device}, but the module was compiled for "
                                 f"{spec.device} (its weights live there); move the input with "
                                 f".to({str(spec.device)!r}), or compile the model on {x.device}")
            if x.dim() != len(spec.shape):
                raise ValueError(f"input {spec.name!r} must have {len(spec.shape)} dims, got shape "
                                 f"{tuple(x.shape)} (expected {spec})")
            for d, (want, got) in enumerate(zip(spec.shape, x.shape)):
                if isinstance(want, int) and want != got:
                    raise ValueError(f"input {spec.name!r} dim {d} must be {want} (compiled static), got shape "
                                     f"{tuple(x.shape)}; expected {spec}. Recompile with that dim dynamic "
                                     "(CompileConfig.dynamic_dims) to vary it.")

    def forward(self, *args: torch.Tensor) -> Any:
        self.check_inputs(args)
        with torch.inference_mode():
            return self._runner(*args)

    def extra_repr(self) -> str:
        ins = ", ".join(str(s) for s in self.input_specs)
        return f"backend={self.backend}, inputs=({ins})"
