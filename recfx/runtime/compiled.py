"""``CompiledModule``: the ``nn.Module`` users call after ``recfx.compile``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.errors import RecfxError
from recfx.frontend.capture import TensorSpec
from recfx.runtime.report import CompileReport


class CompiledModule(torch.nn.Module):
    """A compiled model: call it like the original (same positional tensor inputs, same outputs).

    Attributes:
        graph_module: the optimised FX graph (parameters, folded constants and quantized weights as attributes).
        report: the :class:`~recfx.runtime.report.CompileReport`.
        input_specs / output_specs: names, shapes (dynamic dims by name) and dtypes.
        example_inputs: the inputs it was compiled with (``save`` exports the graph with them).
        quant_config / backend_options: what the FP8 passes and the backend were told (plain dicts, for bundles).
        bundle_path / bundle_meta: the bundle it was loaded from (``None`` when compiled in this process) and the
            ``meta`` its manifest holds.

    A module loaded from an AOTInductor or ONNX bundle has no FX graph (its graph is compiled code):
    ``graph_module`` raises there, ``has_graph_module`` says so beforehand.
    """

    def __init__(self, graph_module: GraphModule | None, runner: Callable[..., Any], input_specs: list[TensorSpec],
                 output_specs: list[TensorSpec], report: CompileReport, *,
                 example_inputs: tuple[torch.Tensor, ...] | None = None, quant_config: dict[str, Any] | None = None,
                 backend_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.add_module("graph_module", graph_module)  # a submodule (state_dict keys), read through the property
        self._runner = runner
        self.input_specs = input_specs
        self.output_specs = output_specs
        self.report = report
        self.example_inputs = example_inputs
        self.quant_config = quant_config
        self.backend_options = dict(backend_options or {})
        self.bundle_path: Path | None = None
        self.bundle_meta: dict[str, Any] = {}
        self.training = False  # inference only (the exported graph module refuses train()/eval() calls)

    @property
    def graph_module(self) -> GraphModule:
        """The optimised FX graph module.

        Raises:
            RecfxError: the module was loaded from a bundle of compiled code (AOTInductor, ONNX). (Not an
                AttributeError: ``nn.Module`` would answer that with ``None``.)
        """
        gm = self._modules.get("graph_module")
        if gm is None:
            raise RecfxError(f"this {self.backend} module was loaded from the bundle {self.bundle_path}, which "
                                 "holds compiled code, not an FX graph; compile the model with recfx.compile to get "
                                 "its graph module")
        assert isinstance(gm, GraphModule)
        return gm

    @property
    def has_graph_module(self) -> bool:
        return self._modules.get("graph_module") is not None

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

    def warm_up(self, batches: Sequence[int] = (1, 2, 4, 8),
                inputs: tuple[torch.Tensor, ...] | None = None) -> dict[int, float]:
        """Call the module once at each batch size before serving, so that no request pays the lazy work.

        The first call at a new batch size can cost far more than the next ones: torch specialises a batch of 1, so
        a dynamic-batch Inductor module compiles a second graph the first time a batch of 1 arrives (onerec-1b on
        an H100: 41 s on ``inductor``, 81 s on ``cuda-fp8``), and a backend with CUDA graphs (``cuda-fp8``) captures
        one per batch bucket on its first call there. Call this once after compiling or loading (``recfx serve``
        does, for the models it compiles).

        The inputs of each batch size are rows of ``inputs`` (default: the example inputs the module was compiled
        with) taken along the batch dim, repeated where the batch is larger, so every value is one the model has
        already accepted. That needs a plain dynamic batch: one symbol at dim 0 of the batch-major inputs and no
        other dynamic dim (derived sizes such as jagged offsets cannot be made up from rows): call such a module
        on inputs of each size yourself. Inputs without the batch dim are passed unchanged, so their values must
        not depend on the batch size.

        Args:
            batches: the batch sizes to call (e.g. the CUDA-graph buckets, or every size a server may batch).
            inputs: a tuple of inputs at any batch size, for a module that has no example inputs (one loaded from
                a bundle).

        Returns:
            Seconds taken by the call at each batch size (the GPU synchronised), in the order given.

        Raises:
            TypeError: ``batches`` or ``inputs`` of the wrong kind, or inputs that do not fit (``check_inputs``).
            ValueError: a batch size below 1, a module without a plain dynamic batch or with other dynamic dims,
                or no inputs to take rows from.
            Exception: what the module's call raised, with a note naming the batch size.

        Example:
            >>> import torch, recfx
            >>> fast = recfx.compile(torch.nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backend="eager")
            >>> sorted(fast.warm_up(batches=(1, 5)))
            [1, 5]
        """
        if isinstance(batches, int) or not isinstance(batches, Sequence):
            raise TypeError(f"warm_up batches must be a sequence of batch sizes such as (1, 2, 4, 8), got "
                            f"{batches!r}")
        if isinstance(inputs, torch.Tensor):
            raise TypeError("warm_up inputs must be a tuple of tensors, one per input, e.g. inputs=(x,)")
        bad = [b for b in batches if isinstance(b, bool) or not isinstance(b, int) or b < 1]
        if bad:
            raise ValueError(f"warm_up batches must be integers >= 1, got {bad}")
        dynamic = [(spec.name, d, sym) for spec in self.input_specs for d, sym in enumerate(spec.shape)
                   if isinstance(sym, str)]
        firsts = {sym for _, d, sym in dynamic if d == 0 and sym.isidentifier()}
        if len(firsts) != 1:
            dims = ", ".join(f"{name} dim {d} ({sym!r})" for name, d, sym in dynamic) or "none"
            raise ValueError(f"warm_up varies the batch, one dynamic dim 0 shared by the batch-major inputs; this "
                             f"module's dynamic dims: {dims}. Call it on inputs of each shape you will serve instead")
        batch = firsts.pop()
        other = [f"{name} dim {d} ({sym!r})" for name, d, sym in dynamic if (d, sym) != (0, batch)]
        if other:
            raise ValueError(f"warm_up makes inputs from rows of a batch, and cannot make up the other dynamic dims "
                             f"({', '.join(other)}); call the module on inputs of each size instead")
        source = self.example_inputs if inputs is None else tuple(inputs)
        if source is None:
            raise ValueError("this module has no example inputs (it was loaded from a bundle): pass inputs=(...) "
                             "at any batch size, e.g. one real request")
        self.check_inputs(source)
        batch_major = [bool(spec.shape) and spec.shape[0] == batch for spec in self.input_specs]
        sizes = {x.shape[0] for x, major in zip(source, batch_major) if major}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"the batch-major inputs must share one batch size >= 1, got sizes {sorted(sizes)}")
        seconds: dict[int, float] = {}
        for b in batches:
            args = tuple(x.index_select(0, torch.arange(b, device=x.device) % x.shape[0]) if major else x
                         for x, major in zip(source, batch_major))
            t0 = time.perf_counter()
            try:
                self(*args)
                for device in {x.device for x in args if x.device.type == "cuda"}:
                    torch.cuda.synchronize(device)
            except Exception as err:
                err.add_note(f"(recfx warm_up: the call at batch {b}, on rows of the "
                             f"{'example inputs' if inputs is None else 'inputs given'})")
                raise
            seconds[b] = time.perf_counter() - t0
        return seconds

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False,
             meta: dict[str, Any] | None = None) -> Path:
        """Write this module as a bundle folder that :func:`recfx.load` reads back (docs/deploy.md).

        Inductor backends write an AOTInductor package, ``ort``/``ort-fp8`` their ONNX file, the eager backends the
        exported program; a ``manifest.json`` beside it holds versions, device, specs, quant config, file hashes
        and the report. The folder appears complete or not at all.

        Args:
            path: the bundle folder to create.
            overwrite: replace an existing bundle at ``path`` (atomically).
            meta: JSON values to keep in the manifest (how the bundle was made).

        Returns:
            ``path``.

        Raises:
            BundleUnsupportedError: this backend or graph cannot be bundled (nothing is written).
            FileExistsError: ``path`` exists and ``overwrite`` is False.

        Example:
            >>> import tempfile, torch, recfx
            >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
            >>> fast = recfx.compile(model, (torch.randn(4, 8),), backend="eager")
            >>> folder = tempfile.mkdtemp()
            >>> again = recfx.load(fast.save(folder + "/bundle"))
            >>> x = torch.randn(3, 8)
            >>> torch.equal(again(x), fast(x))
            True
        """
        from recfx.runtime.bundle import save_bundle

        return save_bundle(self, path, overwrite=overwrite, meta=meta)

    def forward(self, *args: torch.Tensor) -> Any:
        self.check_inputs(args)
        # torch.export traced stride-dependent code (x.contiguous() is no node for a contiguous example, a view
        # relies on it) for row-major inputs: hand the graph that layout (a no-op for contiguous tensors).
        args = tuple(x.contiguous() for x in args)
        with torch.inference_mode():
            return self._runner(*args)

    def extra_repr(self) -> str:
        ins = ", ".join(str(s) for s in self.input_specs)
        return f"backend={self.backend}, inputs=({ins})"
