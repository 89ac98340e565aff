"""``recfx.compile``: capture, optimise, hand to a backend, check numerics; ``recfx.load``; ``recfx.export_onnx``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from recfx.backends import resolve_backend
from recfx.compile_config import CompileConfig
from recfx.frontend import capture
from recfx.frontend.capture import TRACE_LOCK
from recfx.onnx import export as onnx_export
from recfx.onnx.config import OnnxExportConfig
from recfx.ops.fp8_granularities import STATIC_PER_TENSOR
from recfx.passes import CANONICAL_PASSES, PASSES, PassContext, PassManager, insert_placements
from recfx.passes.quant import QuantConfig
from recfx.runtime import CompiledModule, CompileReport, compare_outputs
from recfx.runtime import cache as compile_cache
from recfx.runtime.bundle import load_bundle

log = logging.getLogger(__name__)


def compile(  # shadows the builtin on purpose: mirrors torch.compile
    model: torch.nn.Module,
    example_inputs: Any,
    backend: str = "auto",
    config: CompileConfig | None = None,
    *,
    calibration: Iterable[Any] | None = None,
    quant: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
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
        cache_dir: a folder for the compile cache (default ``$RECFX_COMPILE_CACHE``; neither: no cache). The key
            hashes the captured graph, its weights, the configs, calibration data, backend, versions and device; a
            hit loads the saved bundle instead of compiling (docs/deploy.md).

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

    cache = compile_cache.cache_dir_from(cache_dir)
    if cache is not None and calibration is not None:
        calibration = list(calibration)  # hashed for the key, then used by the passes
    quant_dict = quant.to_dict() if isinstance(quant, QuantConfig) else (QuantConfig().to_dict() if be.fp8 else None)

    with TRACE_LOCK:  # torch.export patches process-wide state while it traces: one compile at a time
        t0 = time.perf_counter()
        fingerprint = None
        if cache is not None:  # a call seen before loads its entry without tracing (recfx.runtime.cache)
            fingerprint = compile_cache.fingerprint(model, example_inputs, config.to_dict(), quant_dict, calibration,
                                                    be.name)
            hit = compile_cache.lookup_fingerprint(cache, fingerprint, _device_of(example_inputs))
            if hit is not None:
                log.info("compile cache hit for %s on %s: %s (%.2f s, not captured)", type(model).__name__,
                         be.name, hit.bundle_path, time.perf_counter() - t0)
                return hit
        captured = capture(model, example_inputs, dynamic_batch=config.dynamic_batch,
                           dynamic_dims=dict(config.dynamic_dims) or None)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        key = ""
        if cache is not None:
            key = compile_cache.cache_key(captured, config.to_dict(), quant_dict, calibration, be.name)
            hit = compile_cache.lookup(cache, key, captured.input_specs[0].device if captured.input_specs else None)
            if hit is not None:
                compile_cache.record_fingerprint(cache, fingerprint, key)
                log.info("compile cache hit for %s on %s: %s (%.2f s)", type(model).__name__, be.name,
                         hit.bundle_path, time.perf_counter() - t0)
                return hit
        ctx = PassContext(example_inputs=captured.example_inputs, captured=captured, model=model, backend=be.name,
                          backend_options=dict(config.backend_options), quant=quant, calibration=calibration)
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
        report.sections.update(ctx.report_sections)
        compiled = CompiledModule(gm, runner, captured.input_specs, captured.output_specs, report,
                                  example_inputs=captured.example_inputs, quant_config=quant_dict,
                                  backend_options=dict(config.backend_options))
        with torch.inference_mode():
            got = compiled(*captured.example_inputs)  # also triggers lazy backends (torch.compile), timed as backend
        report.backend_seconds = time.perf_counter() - t2
        if config.check_numerics:
            with torch.inference_mode():
                want = model(*captured.example_inputs)
            report.numerics = compare_outputs(want, got)
    log.info("compiled %s on %s in %.2f s", report.model, be.name, report.total_seconds)
    if cache is not None and compile_cache.store(compiled, cache, key) is not None:
        compile_cache.record_fingerprint(cache, fingerprint, key)
    return compiled


def _device_of(example_inputs: Any) -> torch.device | None:
    leaves = [x for x in torch.utils._pytree.tree_leaves(example_inputs) if isinstance(x, torch.Tensor)]
    return leaves[0].device if leaves else None


def load(path: str | os.PathLike[str], device: str | torch.device | None = None) -> CompiledModule:
    """Load a bundle written by :meth:`CompiledModule.save` (or the compile cache), after checking it.

    The manifest is checked before anything is loaded: every file's size and SHA-256, the torch (and, for GPU code,
    triton) version, and the device (type, GPU compute capability, and for AOTInductor code the host CPU's
    features). The returned module checks its inputs like the original and carries its ``.report``. A bundle
    holding compiled code is trusted like a shared library: the hashes guard integrity, not authenticity
    (docs/deploy.md).

    Args:
        path: the bundle folder.
        device: where to run it (``"cpu"``, ``"cuda"``, ``"cuda:1"``); default: the device it was compiled for.

    Returns:
        A :class:`~recfx.runtime.CompiledModule`.

    Raises:
        FileNotFoundError: no bundle at ``path``.
        BundleIntegrityError: a file is missing, truncated or changed.
        BundleVersionError: built with another torch / triton / bundle format.
        BundleDeviceError: built for another device type or GPU architecture, or on a CPU with features this
            one lacks.

    Example:
        >>> import tempfile, torch, recfx
        >>> model = torch.nn.Linear(8, 4).eval()
        >>> path = recfx.compile(model, (torch.randn(2, 8),), backend="eager").save(tempfile.mkdtemp() + "/b")
        >>> recfx.load(path)(torch.randn(5, 8)).shape
        torch.Size([5, 4])
    """
    return load_bundle(path, device)


def export_onnx(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path,
                config: OnnxExportConfig | None = None, *, calibration: Iterable[Any] | None = None,
                quant: QuantConfig | None = None) -> onnx_export.OnnxExport:
    """Export a model's optimised graph to ONNX (docs/onnx.md).

    Args:
        model: a :class:`~recfx.runtime.CompiledModule` (exported as compiled), or an ``nn.Module`` that is compiled
            first (``eager``, or ``eager-fp8`` with ``config.fp8``).
        example_inputs: positional tensors (used to re-capture the graph; a batch >= 2 keeps it dynamic).
        path: the ``.onnx`` file to write (its folder must exist).
        config: :class:`~recfx.onnx.OnnxExportConfig` (opset, FP8, static activations, ``ksa_as_ops``, lint...).
        calibration: batches for static FP8 activations (``config.static_activations``); for a compiled module, the
            batches it was calibrated with (hashed into the metadata).
        quant: a ``QuantConfig`` for the FP8 compile of an ``nn.Module`` (a compiled module has its own).

    Returns:
        :class:`~recfx.onnx.OnnxExport` (path, op histogram, lint report, metadata).

    Raises:
        TypeError / ValueError: bad arguments: an opset below 21 with FP8, ``fp8=True`` with an unquantized
            compiled module, static activations without calibration data, ``quant`` with a compiled module.
        FileNotFoundError / PermissionError: the output folder is missing or not writable (checked first).
        OnnxExportError: ops without ONNX translation (listed with their source lines), or the exporter failed.
        OnnxLintError: ``lint="strict"`` and the file breaks TensorRT's rules. Nothing is written on any error.

    Example:
        >>> import tempfile, torch, recfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
        >>> out = recfx.export_onnx(model, (torch.randn(2, 8),), tempfile.mkdtemp() + "/mlp.onnx")
        >>> out.histogram
        {'Gemm': 1, 'Relu': 1}
    """
    config = config or OnnxExportConfig()
    if not isinstance(config, OnnxExportConfig):
        raise TypeError(f"config must be a recfx.onnx.OnnxExportConfig, got {type(config).__name__}")
    if isinstance(model, CompiledModule):
        if quant is not None:
            raise ValueError(f"quant= applies when export_onnx compiles an nn.Module; this CompiledModule (backend "
                             f"{model.backend!r}) was compiled with its own quant config ({model.quant_config}); "
                             "compile the original model with the QuantConfig you want and export that")
        return onnx_export.export_onnx(model, example_inputs, path, config, calibration=calibration)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export_onnx takes an nn.Module or a recfx CompiledModule, got {type(model).__name__}")
    onnx_export.check_writable(path)  # before the compile: a bad path costs nothing
    inputs = onnx_export.as_inputs(example_inputs)
    compiled = _compile_for_onnx(model, inputs, config, calibration, quant)
    return onnx_export.export_onnx(compiled, inputs, path, config, calibration=calibration)


def _compile_for_onnx(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], config: OnnxExportConfig,
                      calibration: Iterable[Any] | None, quant: QuantConfig | None) -> CompiledModule:
    """``model`` compiled as ``config`` asks: ``eager``, or ``eager-fp8`` (static per-tensor activations if asked)."""
    compile_config = CompileConfig(dynamic_batch=config.dynamic, dynamic_dims=dict(config.dynamic_dims))
    if not config.fp8:
        if quant is not None or calibration is not None:
            raise ValueError("quant/calibration were given for an fp32 export; set fp8=True (--fp8) to quantize")
        return compile(model, inputs, backend="eager", config=compile_config)
    if config.static_activations:
        if calibration is None:
            raise ValueError("static_activations needs calibration batches (calibration=[...]) to compute the "
                             "per-tensor activation scales")
        quant = (quant or QuantConfig()).replace(activation=STATIC_PER_TENSOR.name)
    return compile(model, inputs, backend="eager-fp8", config=compile_config, calibration=calibration, quant=quant)
