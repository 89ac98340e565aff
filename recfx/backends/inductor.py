"""``inductor``: ``torch.compile`` (TorchInductor) of the optimised graph module."""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.backends.base import Availability, Backend, register_backend
from recfx.passes.base import PassContext
from recfx.passes.pipelines import INDUCTOR_LOWERINGS, lowering_options
from recfx.passes.regions import outline_repeated_blocks

_INDUCTOR_OPTIONS = ("mode", "options", "dynamic", "fullgraph")
#: recfx's own Inductor heuristics (see :func:`inductor_heuristics` and :func:`compile_regions`).
HEURISTIC_OPTIONS = ("persistent_rows", "persistent_layout", "regions")
#: Rows of up to this many elements are reduced by one program that holds the whole row (Inductor's own limit is
#: 1,024): a per-token FP8 quantization fused into RMSNorm (d_model 2,048) or SiLU(gate) * up (d_ff 5,632) then
#: reads its input once instead of twice (once for the amax, once for the cast).
PERSISTENT_ROWS = 8192
#: Which rows the wider limit applies to: ``"contiguous"`` (Inductor's INNER reductions: rows contiguous in memory) or
#: ``"any"`` (also reductions whose rows are read through a permute or recomputed from other tensors, e.g. the
#: quantization of an attention output that is never stored; Inductor's DEFAULT hint). Each backend has its default
#: (:attr:`InductorBackend.persistent_layout`): ``"any"`` was measured for ``cuda-fp8`` only (1.03-1.04x on onerec-1b,
#: H100, BENCHMARKS.md run 10), so the bf16 ``inductor`` keeps this one until its A/B runs.
PERSISTENT_LAYOUT = "contiguous"
#: Repeated blocks (a transformer's layers) compiled once each and called per layer (``backend_options["regions"]``).
REGIONS = False
#: Optional lowerings of the Inductor backends, each on unless its backend option is False.
LOWERING_CHOICES = lowering_options(INDUCTOR_LOWERINGS)


def inductor_availability() -> Availability:
    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
        except ImportError:
            return Availability(False, "CUDA is present but triton is not installed (pip install 'recfx[gpu]')")
        return Availability(True)
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return Availability(False, "no C++ compiler (g++/clang++) for Inductor's CPU code generation")
    return Availability(True)


@register_backend("inductor")
class InductorBackend(Backend):
    priority = 10
    description = "torch.compile (TorchInductor) of the optimised graph: fused Triton (GPU) or C++ (CPU) kernels"
    #: then GQA attention folded, attention over a few tokens as fused math and MoE layers routed
    #: (``backend_options={"fold_gqa": False}`` keeps the repeated K/V, ``{"tiny_attention": False}`` the SDPA
    #: kernel, ``{"route_moe": False}`` the dense all-experts sum)
    lowering = INDUCTOR_LOWERINGS
    #: the ``persistent_layout`` backend option's default for this backend (:data:`PERSISTENT_LAYOUT`)
    persistent_layout = PERSISTENT_LAYOUT

    def availability(self) -> Availability:
        return inductor_availability()

    def heuristics(self, backend_options: dict[str, Any]) -> tuple[int, bool]:
        """(``persistent_rows``, whether its limit reaches any layout) under ``backend_options`` and this backend's
        defaults: what a compile, and an AOTInductor bundle of it, run under."""
        return (persistent_rows(backend_options),
                persistent_any_layout(backend_options, default=self.persistent_layout))

    def inductor_options(self, ctx: PassContext) -> dict[str, Any]:
        """The user's backend options that go to ``torch.compile`` (subclasses may take more and remove them)."""
        options = self.options(ctx, (*_INDUCTOR_OPTIONS, *HEURISTIC_OPTIONS, *LOWERING_CHOICES))
        for key in (*HEURISTIC_OPTIONS, *LOWERING_CHOICES):
            options.pop(key, None)
        return options

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        options = self.inductor_options(ctx)
        dynamic = options.pop("dynamic", bool(ctx.dynamic_dims))
        rows, any_layout = self.heuristics(ctx.backend_options)
        if compile_regions(ctx.backend_options):
            gm, stats = outline_repeated_blocks(gm)
            ctx.report_sections["regions"] = stats
        if "mode" in options:  # torch.compile takes a mode or options, not both: the mode as the options it sets
            if "options" in options:
                raise ValueError("backend_options: give 'mode' or 'options', not both (torch.compile takes one)")
            options["options"] = mode_options(options.pop("mode"), dynamic)
        options["options"] = keyed_options(options.get("options"), rows, any_layout=any_layout)
        compiled: Callable[..., Any] = torch.compile(gm, backend="inductor", dynamic=dynamic, **options)
        if rows:  # torch.compile compiles lazily (and again for a new shape): the heuristics hold around every call
            compiled = WithHeuristics(compiled, rows, any_layout=any_layout)
        if dynamic:
            _warm_up_dynamic(compiled, ctx)
        return compiled


def compile_regions(backend_options: dict[str, Any]) -> bool:
    """The ``regions`` backend option: compile each repeated block once (``recfx.passes.regions``); a bool."""
    regions = backend_options.get("regions", REGIONS)
    if not isinstance(regions, bool):
        raise ValueError(f"backend_options['regions'] must be True or False, got {regions!r}")
    return regions


#: Above this Inductor finds no static block for a symbolic row length, and register blocks grow past use.
MAX_PERSISTENT_ROWS = 16384


def persistent_rows(backend_options: dict[str, Any]) -> int:
    """The ``persistent_rows`` backend option: an int in [0, 16384] (0 keeps Inductor's own limit of 1,024)."""
    rows = backend_options.get("persistent_rows", PERSISTENT_ROWS)
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= MAX_PERSISTENT_ROWS:
        raise ValueError(f"backend_options['persistent_rows'] must be an int from 0 (Inductor's own limit) to "
                         f"{MAX_PERSISTENT_ROWS}, got {rows!r}")
    return rows


def persistent_any_layout(backend_options: dict[str, Any], default: str = PERSISTENT_LAYOUT) -> bool:
    """The ``persistent_layout`` backend option (``default`` when absent): True for ``"any"``. It widens the
    ``persistent_rows`` limit, so with ``persistent_rows=0`` (Inductor's own limit) it changes nothing."""
    layout = backend_options.get("persistent_layout", default)
    if layout not in ("contiguous", "any"):
        raise ValueError(f"backend_options['persistent_layout'] must be 'contiguous' or 'any', got {layout!r}")
    return layout == "any"


@functools.cache
def _wide_row_choices(limit: int, any_layout: bool) -> Any:
    """The ``InductorChoices`` whose persistent reductions reach rows of ``limit`` elements: contiguous rows only,
    or (``any_layout``) also rows Inductor gives no layout hint for (one object per setting, made on first use:
    importing Inductor is slow)."""
    from torch._inductor import config as inductor_config
    from torch._inductor.choices import InductorChoices
    from torch._inductor.runtime.hints import ReductionHint
    from torch._inductor.runtime.runtime_utils import next_power_of_2
    from torch._inductor.virtualized import V
    from torch.utils._sympy.value_ranges import bound_sympy

    class WideRowChoices(InductorChoices):
        def should_use_persistent_reduction(  # type: ignore[override]  # an instance method: it reads the limit
                self, features: Any, cooperative_reduction: bool) -> bool:
            if InductorChoices.should_use_persistent_reduction(features, cooperative_reduction):
                return True
            if cooperative_reduction or not inductor_config.triton.persistent_reductions:
                return False
            hint = features.get_reduction_hint()
            if hint == ReductionHint.DEFAULT and any_layout:
                # Inductor's own rule for rows without a hint: a symbolic length whose bounds span several
                # power-of-two blocks would leave most of a whole-row block masked off for the short rows
                bounds = bound_sympy(features.reduction_numel)
                if not all(isinstance(b, int) or getattr(b, "is_Integer", False) for b in (bounds.lower, bounds.upper)):
                    return False
                if next_power_of_2(int(bounds.lower)) != next_power_of_2(int(bounds.upper)):
                    return False
            elif hint != ReductionHint.INNER:  # never OUTER: reduced along strided columns
                return False
            return bool(V.graph.sizevars.statically_known_leq(features.reduction_numel, limit))

        def uuid(self) -> str:
            return f"recfx-persistent-rows-{limit}{'-any' if any_layout else ''}"

    return WideRowChoices()


@functools.cache
def _cache_key_pass(rows: int, any_layout: bool) -> Any:
    """A post-grad pass that changes nothing and whose ``uuid`` names the limit and layout: Inductor's FX graph and
    AOT caches key on it, so a graph compiled under one setting is not served from the cache under another."""
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class PersistentRowsKey(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            return None

        def uuid(self) -> str:
            return f"recfx-persistent-rows-{rows}{'-any' if any_layout else ''}"

    return PersistentRowsKey()


def mode_options(mode: str, dynamic: bool) -> dict[str, Any]:
    """The Inductor config options a ``torch.compile`` ``mode`` sets (what ``torch.compile(mode=...)`` applies), so
    that recfx can add its own to them (unknown modes raise with the known ones)."""
    import torch._inductor

    return dict(torch._inductor.list_mode_options(mode, dynamic))


def keyed_options(options: dict[str, Any] | None, rows: int, *, any_layout: bool = False) -> dict[str, Any]:
    """Inductor config options with the cache-key pass of ``rows`` added (a user's own post-grad pass is kept:
    then the cache does not tell the limits apart)."""
    options = dict(options or {})
    if rows and "post_grad_custom_post_pass" not in options:
        options["post_grad_custom_post_pass"] = _cache_key_pass(rows, any_layout)
    return options


@contextlib.contextmanager
def inductor_heuristics(rows: int, *, any_layout: bool = False) -> Iterator[None]:
    """Inductor's heuristics with whole-row (persistent) reductions up to ``rows`` elements, in this thread.

    Results agree with Inductor's default code within floating-point reordering (a whole-row reduction adds in
    another order than a looped one: RMSNorm's mean may differ in the last bit; an amax does not).
    """
    if not rows:
        yield
        return
    from torch._inductor.virtualized import V

    with V.set_choices_handler(_wide_row_choices(rows, any_layout)):
        yield


class WithHeuristics:
    """A compiled callable run under :func:`inductor_heuristics` (where Inductor compiles lazily, at a call)."""

    def __init__(self, compiled: Callable[..., Any], rows: int, *, any_layout: bool = False) -> None:
        self.compiled = compiled
        self.rows, self.any_layout = rows, any_layout

    def __call__(self, *args: Any) -> Any:
        with inductor_heuristics(self.rows, any_layout=self.any_layout):
            return self.compiled(*args)


def _warm_up_dynamic(compiled: Callable[..., Any], ctx: PassContext) -> None:
    """Compile once on copies of the example inputs with their dynamic dims marked.

    ``torch.compile(dynamic=True)`` alone still specialises the first call's sizes for a graph module from
    ``torch.export``, so every new batch size would recompile. Sizes 0 and 1 are still specialised by torch
    (one more compile the first time a batch of 1 arrives).
    """
    captured = ctx.captured
    if captured is None:
        return
    args = [x.clone() for x in ctx.example_inputs]
    for spec, x in zip(captured.input_specs, args):
        for d, size in enumerate(spec.shape):
            if isinstance(size, str):
                torch._dynamo.mark_dynamic(x, d)
    with torch.inference_mode():
        compiled(*args)
