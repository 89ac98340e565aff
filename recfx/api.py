"""``recfx.compile``: capture, optimise, hand to a backend, check numerics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import torch

from recfx.backends import resolve_backend
from recfx.compile_config import CompileConfig
from recfx.frontend import capture
from recfx.frontend.capture import TRACE_LOCK
from recfx.passes import CANONICAL_PASSES, PASSES, PassContext, PassManager, insert_placements
from recfx.runtime import CompiledModule, CompileReport, compare_outputs

log = logging.getLogger(__name__)


def compile(  # shadows the builtin on purpose: mirrors torch.compile
    model: torch.nn.Module,
    example_inputs: Any,
    backend: str = "auto",
    config: CompileConfig | None = None,
    *,
    calibration: Iterable[Any] | None = None,
    quant: Any = None,
) -> CompiledModule:
    """Compile ``model`` for inference.

    Args:
        model: an ``nn.Module`` in eval mode, called with positional tensors.
        example_inputs: a tuple of tensors (one per positional input); a batch of >= 2 keeps the batch dynamic.
        backend: a registered backend name (``recfx.backends.BACKENDS``), ``"auto"`` (the best available one) or
            ``"auto-fp8"`` (the best available FP8 one). An explicit backend never falls back to another.
        config: a :class:`CompileConfig` (passes, dynamic dims, dumps, invariant checks...).
        calibration: batches (tuples of tensors) for static FP8 calibration (``*-fp8`` backends only).
        quant: a ``QuantConfig`` for ``*-fp8`` backends.

    Returns:
        A :class:`~recfx.runtime.CompiledModule`; ``.report`` lists the passes, timings, node counts, backend and
        the numerical check against ``model`` on ``example_inputs``.

    Raises:
        TypeError / ValueError: bad inputs or options, or a model that is already compiled (the message says which
            and what to do).
        UnknownKeyError: an unknown backend or pass name.
        BackendUnavailableError: the named backend cannot run here.
        CaptureError / PassError: capture or a pass failed (the message names the op or pass and the node).

    Example:
        >>> import torch, recfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
        >>> fast = recfx.compile(model, (torch.randn(4, 8),), backend="eager")
        >>> fast(torch.randn(3, 8)).shape
        torch.Size([3, 8])
        >>> fast.report.numerics[0].cosine > 0.9999
        True
    """
    if isinstance(model, CompiledModule):
        raise TypeError(f"model is already a recfx CompiledModule (backend {model.backend!r}); pass the original "
                        "nn.Module to compile it again, e.g. with another backend or quantization")
    config = config or CompileConfig()
    if not isinstance(config, CompileConfig):
        raise TypeError(f"config must be a recfx.CompileConfig, got {type(config).__name__}")
    be, reason = resolve_backend(backend)
    if not be.fp8 and (quant is not None or calibration is not None):
        raise ValueError(f"quant/calibration were given but backend {be.name!r} does not quantize; "
                         f"use an FP8 backend such as {be.name}-fp8 or 'auto-fp8'")

    with TRACE_LOCK:  # torch.export patches process-wide state while it traces: one compile at a time
        t0 = time.perf_counter()
        captured = capture(model, example_inputs, dynamic_batch=config.dynamic_batch,
                           dynamic_dims=dict(config.dynamic_dims) or None)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        ctx = PassContext(config=config, example_inputs=captured.example_inputs,
                          extras={"calibration": calibration, "quant": quant, "captured": captured, "model": model,
                                  "dynamic_dims": captured.dynamic_dims, "backend": be.name})
        pipeline = [PASSES.get(n) for n in (config.passes if config.passes is not None else CANONICAL_PASSES)]
        pipeline += [PASSES.get(n) for n in be.passes(ctx)]
        pipeline = insert_placements(pipeline, config.user_passes)
        manager = PassManager(pipeline, ctx, check_invariants=config.invariants_on, dump_after=config.dump_after,
                              dump_dir=config.dump_dir, dump_format=config.dump_format)
        nodes_captured = len(captured.graph_module.graph.nodes)
        gm = manager.run(captured.graph_module)
        t2 = time.perf_counter()
        runner = be.compile(gm, ctx)
        report = CompileReport(
            model=type(model).__name__, backend=be.name, backend_reason=reason, passes=list(manager.records),
            nodes_captured=nodes_captured, nodes_final=len(gm.graph.nodes), capture_seconds=t1 - t0,
            passes_seconds=t2 - t1, inputs=[f"in  {s}" for s in captured.input_specs],
            outputs=[f"out {s}" for s in captured.output_specs],
        )
        report.sections.update(ctx.extras.get("report_sections", {}))
        compiled = CompiledModule(gm, runner, captured.input_specs, captured.output_specs, report)
        with torch.inference_mode():
            got = compiled(*captured.example_inputs)  # also triggers lazy backends (torch.compile), timed as backend
        report.backend_seconds = time.perf_counter() - t2
        if config.check_numerics:
            with torch.inference_mode():
                want = model(*captured.example_inputs)
            report.numerics = compare_outputs(want, got)
    log.info("compiled %s on %s in %.2f s", report.model, be.name, report.total_seconds)
    return compiled
