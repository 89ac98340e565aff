"""``export_onnx``: a compiled module's optimised graph as a standard ONNX file (FP8 Q/DQ, TensorRT plugin nodes),
checked with ``onnx.checker`` and TensorRT's explicit-quantization rules. (:func:`recfx.export_onnx`, the API, also
takes an ``nn.Module`` and compiles it first.)

Pipeline: compiled graph module -> ``torch.export`` (dynamic dims kept) -> decompositions (``ksa_as_ops``) ->
``torch.onnx.export`` with recfx's translations (``recfx/onnx/translate*.py``) -> onnxscript optimizer (Q/DQ kept)
-> names and metadata -> written atomically after ``onnx.checker`` (full check) and the linter pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.export import Dim
from torch.fx import GraphModule

from recfx.errors import RecfxError
from recfx.frontend.capture import TRACE_LOCK, TensorSpec, export_dim, export_program
from recfx.frontend.size_one import NAMED_SQUEEZES, describe, size_one_hazards
from recfx.onnx import translate
from recfx.onnx.config import MIN_FP8_OPSET, OnnxExportConfig
from recfx.onnx.lint import LintReport
from recfx.onnx.metadata import build_metadata, calibration_hash
from recfx.onnx.write import write_model
from recfx.ops.fp8_terms import ACTIVATION_MODES, FP8_STORAGE_DTYPES, activation_mode, is_fp8_op

log = logging.getLogger(__name__)



class OnnxExportError(RecfxError):
    """The graph could not be exported to ONNX (an op without translation, or the exporter failed)."""


@dataclasses.dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        opset: the default-domain opset.
        fp8: whether the graph holds FP8 Q/DQ.
        histogram: ``{op_type: count}`` of the exported graph (plugin ops as ``domain::op_type``).
        plugins: TensorRT plugin op types in the file.
        lint: the TensorRT-rules report (``None`` with ``lint="off"``).
        metadata: the ``recfx.*`` metadata written into the file.
        seconds: wall time of the export (compile not included).
    """

    path: Path
    opset: int
    fp8: bool
    histogram: dict[str, int]
    plugins: list[str]
    lint: LintReport | None
    metadata: dict[str, str]
    seconds: float

    def summary(self) -> str:
        top = sorted(self.histogram.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        precision = "FP8" if self.fp8 else "fp32"
        nodes = sum(self.histogram.values())
        lines = [f"wrote {self.path} (opset {self.opset}, {precision}, {nodes} nodes, {self.seconds:.1f} s)",
                 "  ops: " + ", ".join(f"{k} {v}" for k, v in top)]
        if self.plugins:
            lines.append("  TensorRT plugins: " + ", ".join(self.plugins))
        if self.lint is not None:
            lines.append("  " + self.lint.headline())
        return "\n".join(lines)


class ExportReport(Protocol):
    """What :func:`export_onnx` reads of a compile report (:class:`recfx.CompileReport` is one)."""

    @property
    def model(self) -> str: ...

    @property
    def sections(self) -> dict[str, Any]: ...


class CompiledGraph(Protocol):
    """What :func:`export_onnx` reads of a compiled module: :class:`recfx.CompiledModule` is one.

    Named by its shape rather than imported: the runtime (which holds ``CompiledModule``) sits above this layer and
    uses it (ONNX bundles, the ``ort`` backends), see docs/architecture.md.
    """

    @property
    def input_specs(self) -> list[TensorSpec]: ...

    @property
    def output_specs(self) -> list[TensorSpec]: ...

    @property
    def quant_config(self) -> dict[str, Any] | None:
        """The quant config the module was compiled with (``QuantConfig.to_dict()``), ``None`` if not quantized."""

    @property
    def report(self) -> ExportReport: ...

    @property
    def graph_module(self) -> GraphModule: ...

    @property
    def backend(self) -> str: ...


def export_onnx(compiled: CompiledGraph, example_inputs: Sequence[torch.Tensor], path: str | Path,
                config: OnnxExportConfig | None = None, *, calibration: Iterable[Any] | None = None) -> OnnxExport:
    """Export a compiled module's optimised graph to ONNX.

    :func:`recfx.export_onnx` also takes an ``nn.Module`` (and compiles it first); this function exports what was
    compiled: its backend, FP8 graph and quant config (``compiled.quant_config``) go into the metadata.

    Args:
        compiled: a :class:`~recfx.CompiledModule` (``recfx.compile(model, ...)``).
        example_inputs: positional tensors (used to re-capture the graph; a batch >= 2 keeps it dynamic).
        path: the ``.onnx`` file to write (its folder must exist).
        config: :class:`OnnxExportConfig` (opset, FP8, static activations, ``ksa_as_ops``, lint mode...).
        calibration: the batches the module was calibrated with, to hash them into the metadata.

    Returns:
        :class:`OnnxExport` (path, op histogram, lint report, metadata).

    Raises:
        TypeError / ValueError: bad arguments: not a compiled module, an opset below 21 with FP8, ``fp8=True`` with
            an unquantized compiled module, static activations asked of one that quantizes at run time.
        FileNotFoundError / PermissionError: the output folder is missing or not writable (checked first).
        OnnxExportError: ops without ONNX translation (listed with their source lines), or the exporter failed.
        OnnxLintError: ``lint="strict"`` and the file breaks TensorRT's rules. Nothing is written on any error.

    Example:
        >>> import tempfile, torch, recfx
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
        >>> compiled = recfx.compile(model, (torch.randn(2, 8),), backend="eager")
        >>> export_onnx(compiled, (torch.randn(2, 8),), tempfile.mkdtemp() + "/mlp.onnx").histogram
        {'Gemm': 1, 'Relu': 1}
    """
    if not _is_compiled(compiled):
        raise TypeError(f"recfx.onnx.export_onnx takes a recfx CompiledModule (from recfx.compile), got "
                        f"{type(compiled).__name__}; recfx.export_onnx compiles an nn.Module first")
    config = config or OnnxExportConfig()
    if not isinstance(config, OnnxExportConfig):
        raise TypeError(f"config must be a recfx.onnx.OnnxExportConfig, got {type(config).__name__}")
    check_writable(path)
    inputs = as_inputs(example_inputs)
    calib = calibration_hash(calibration)
    name = config.model_name or compiled.report.model
    section = compiled.report.sections.get("fp8")
    if calibration is None and getattr(section, "data_source", "") == "calibration data":
        calib = "unknown (the compiled module was calibrated; pass calibration= to export_onnx to hash it)"
    gm = compiled.graph_module
    fp8 = has_fp8(gm)
    linears = int(getattr(section, "linears", 0) or 0)
    if config.fp8 and not fp8 and section is not None and linears and not section.quantized:
        rules = "; ".join(sorted({why for _, why in section.excluded})) or "no rule recorded"
        raise ValueError(f"fp8=True but the FP8 policy excluded all {linears} GEMMs ({rules}): there is nothing to "
                         "export in FP8; include layers with QuantRule('include', ...) or export without fp8")
    if config.fp8 and not fp8:
        raise ValueError(f"fp8=True but the compiled module (backend {compiled.backend!r}) holds no FP8 ops; compile "
                         "it with an FP8 backend (e.g. 'eager-fp8') or pass the nn.Module")
    dynamic = dynamic_activation_nodes(gm)
    if config.static_activations and dynamic:
        raise ValueError(f"static_activations=True but the compiled module quantizes activations at run time "
                         f"({len(dynamic)} node(s), e.g. {dynamic[0]}); compile it with a calibrated activation "
                         f"mode (QuantConfig(activation={' or '.join(map(repr, calibrated_modes()))})) and "
                         "calibration data, or pass the nn.Module")
    if fp8 and config.opset < MIN_FP8_OPSET:
        raise ValueError(f"the graph holds FP8 ops, which need opset >= {MIN_FP8_OPSET}; got opset {config.opset}")
    t0 = time.perf_counter()
    model = onnx_model(gm, inputs, compiled.input_specs, compiled.output_specs, config)
    plugins = translate.plugin_ops(gm, config.ksa_as_ops)
    metadata = build_metadata(model=name, backend=compiled.backend, fp8=fp8, quant=compiled.quant_config,
                              calibration=calib, export_config=config, plugins=plugins,
                              inputs=compiled.input_specs, outputs=compiled.output_specs)
    model.metadata_props.update(metadata)
    lint, histogram = write_model(model, path, lint=config.lint)
    result = OnnxExport(Path(path), config.opset, fp8, histogram, plugins, lint, metadata,
                        time.perf_counter() - t0)
    log.info("%s", result.summary())
    return result


def _is_compiled(obj: Any) -> bool:
    """Whether ``obj`` looks like a :class:`CompiledGraph` (a plain ``nn.Module`` or a graph module does not)."""
    return isinstance(obj, torch.nn.Module) and isinstance(getattr(obj, "input_specs", None), list) \
        and hasattr(obj, "report") and hasattr(obj, "quant_config")


def check_writable(path: str | Path) -> None:
    """Raise before any work when ``path`` cannot be written (missing folder, read-only folder, a directory)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the ONNX file to {path}: it is a directory; give a file name")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write {path}: folder {folder} is not writable")


def has_fp8(gm: GraphModule) -> bool:
    """Whether the graph computes in FP8 (a ``recfx::`` FP8 op, or a tensor of an FP8 dtype)."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and is_fp8_op(node.target):
            return True
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dtype in FP8_STORAGE_DTYPES:
            return True
    return False


def calibrated_modes() -> list[str]:
    """The registered activation modes whose scales come from calibration data (static scales)."""
    return [m for m in ACTIVATION_MODES if activation_mode(m).calibrated]


def dynamic_activation_nodes(gm: GraphModule) -> list[str]:
    """Names of the FP8 nodes that compute activation scales at run time (per-token, 1 x G groups)."""
    ops = torch.ops.recfx
    dynamic = (ops.quantize_fp8_per_token.default, ops.quantize_fp8_groups.default, ops.fp8_linear_blocks.default)
    return [n.name for n in gm.graph.nodes if n.target in dynamic or (
        n.target is ops.fp8_linear.default and (n.args[4] if len(n.args) > 4 else n.kwargs.get("x_scale")) is None)]


def onnx_model(gm: GraphModule, example_inputs: tuple[torch.Tensor, ...], input_specs: Sequence[TensorSpec],
               output_specs: Sequence[TensorSpec], config: OnnxExportConfig) -> Any:
    """The ONNX model (``onnx_ir.Model``) of a compiled graph module, optimised and with recfx's names.

    Raises:
        OnnxExportError: ops without ONNX translation, or ``torch.export`` / ``torch.onnx`` failed.
    """
    from recfx.onnx import ir_passes

    check_translatable(gm, config.ksa_as_ops)
    with TRACE_LOCK:  # re-capture, decompositions and the dynamo exporter all trace
        program = _export_program(gm, example_inputs, input_specs, config)
    model = program.model
    if config.optimize:
        ir_passes.optimize(model)
        ir_passes.pretranspose_weights(model)
    ir_passes.rename_dims(model, ir_passes.dim_mapping(model.graph.inputs, [s.shape for s in input_specs]))
    ir_passes.separate_outputs(model.graph)  # outputs aliasing an input or each other get names of their own
    ir_passes.rename_values(model.graph.inputs, [s.name for s in input_specs])
    ir_passes.rename_values(model.graph.outputs, [s.name for s in output_specs])
    return model


def _export_program(gm: GraphModule, example_inputs: tuple[torch.Tensor, ...], input_specs: Sequence[TensorSpec],
                    config: OnnxExportConfig) -> Any:
    ep = _recapture(gm, example_inputs, input_specs, config.dynamic)
    hazards = size_one_hazards(ep, NAMED_SQUEEZES) if config.dynamic else []
    if hazards:  # the ONNX checker refuses such a file, or it returns the wrong shape, without saying why
        raise OnnxExportError(f"{describe(hazards)}; an ONNX Squeeze with axes drops them whatever their size, so "
                              "the file would fail or return the wrong shape where that dim is 1 (e.g. a batch of "
                              "1). Index or reshape that dim in the model instead of squeeze(dim), export with fixed "
                              "shapes (OnnxExportConfig(dynamic=False), recfx export-onnx --static-shapes), or use "
                              "backend 'inductor' or 'eager'")
    decomps = translate.decomposition_table(config.ksa_as_ops)
    used = {n.target for n in ep.graph.nodes if n.op == "call_function"}
    if decomps.keys() & used:
        ep = ep.run_decompositions({k: v for k, v in decomps.items() if k in used})
    try:
        with _quiet_exporter():
            table: dict[Any, Any] = translate.translation_table(config.ksa_as_ops)
            program = torch.onnx.export(ep, dynamo=True, opset_version=config.opset, optimize=False, verbose=False,
                                        custom_translation_table=table)
    except Exception as err:  # torch.onnx raises several unrelated types; all become one clear error
        missing = _untranslatable_torch_ops(ep, config.opset, table)
        if missing:
            raise OnnxExportError(_missing_message(missing)) from err
        raise OnnxExportError(f"torch.onnx could not translate the graph: {_root_cause(err)}") from err
    assert program is not None  # the dynamo exporter always returns its ONNXProgram
    return program


def check_translatable(gm: GraphModule, as_ops: bool) -> None:
    """Raise :class:`OnnxExportError` listing every op without an ONNX form and where it comes from."""
    missing = translate.untranslatable_nodes(gm, as_ops)
    if missing:
        raise OnnxExportError(_missing_message(missing))


def _missing_message(missing: dict[str, list[Any]]) -> str:
    lines = [f"cannot export to ONNX: {len(missing)} op(s) have no ONNX translation:"]
    for name, nodes in sorted(missing.items()):
        lines.append(f"  {name} ({len(nodes)} node{'s' * (len(nodes) > 1)}):")
        lines += [f"    {n.name} at {translate.source_line(n)}" for n in nodes[:5]]
        if len(nodes) > 5:
            lines.append(f"    ... and {len(nodes) - 5} more")
    lines.append("Register an onnxscript translation with recfx.onnx.register_translation('ns::op', fn), or keep "
                 "these ops out of the exported model. No file was written.")
    return "\n".join(lines)


def _untranslatable_torch_ops(ep: torch.export.ExportedProgram, opset: int,
                              table: dict[Any, Any]) -> dict[str, list[Any]]:
    """The aten/prims ops torch.onnx has no translation for, after its own decompositions (as it dispatches them),
    with their nodes (whose stack traces are the user's source lines); empty when that is not why the export failed.
    """
    try:  # torch.onnx's registry and decomposition are internal: any change in them only loses the listing
        from torch.onnx._internal.exporter import _fx_passes, _registration

        with _quiet_exporter():
            registry = _registration.ONNXRegistry.from_torchlib(opset_version=opset)
            decomposed = _fx_passes.decompose_with_registry(ep, registry)
        missing: dict[str, list[Any]] = {}
        for node in decomposed.graph.nodes:
            name = translate.op_qualname(node.target) if node.op == "call_function" else None
            if name and name not in translate.CHECK_OPS and node.target not in table \
                    and not registry.is_registered(node.target):
                missing.setdefault(name, []).append(node)
        return missing
    except Exception:  # internal API drift: report the plain error instead
        log.debug("could not list the ops torch.onnx cannot translate", exc_info=True)
        return {}


def _recapture(gm: GraphModule, inputs: tuple[torch.Tensor, ...], specs: Sequence[TensorSpec],
               dynamic: bool) -> torch.export.ExportedProgram:
    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any] | None] = []
    for spec in specs:
        spec_dims = {}
        for d, size in enumerate(spec.shape):
            if dynamic and isinstance(size, str):
                spec_dims[d] = _export_dim(size, dims)
        shapes.append(spec_dims or None)
    try:
        return export_program(gm, inputs, tuple(shapes) if any(shapes) else None)
    except Exception as err:  # torch.export raises many unrelated types
        raise OnnxExportError(f"re-capturing the optimised graph with torch.export failed: {_root_cause(err)}") \
            from err


def _export_dim(size: str, roots: dict[str, Any]) -> Any:
    """A dynamic dim as the capture named it: a symbol, a derived dim of one (``batch + 1``), else ``Dim.AUTO``."""
    try:
        return export_dim(size, roots)
    except ValueError:
        return Dim.AUTO


def as_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """The example inputs as a tuple of tensors (one tensor alone is one input).

    Raises:
        TypeError: an input is not a tensor.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    bad = [type(x).__name__ for x in inputs if not isinstance(x, torch.Tensor)]
    if bad:
        raise TypeError(f"example_inputs must be tensors (one per positional input), got {bad}")
    return inputs


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence torch.onnx's registry warnings about optional libraries (torchvision) during one export."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _root_cause(err: BaseException) -> str:
    chain: list[str] = []
    cause: BaseException | None = err
    while cause is not None and len(chain) < 6:
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        chain.append(f"{type(cause).__name__}: {first[:300]}")
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(reversed(chain))
