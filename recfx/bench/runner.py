"""``run_bench``: compile each backend once per model variant, check it against the reference, time it.

For each model variant (sequence length, beam) the original model runs once per batch size: its outputs are the
reference of the accuracy check and its FLOPs are counted. Then each runnable backend is compiled once
(``recfx.compile`` with a dynamic batch) and, for each batch size and CUDA-graph mode: warm-up, accuracy check,
synchronous latency, pipelined throughput. A backend that raises (in compile or at one shape) gives a ``failed``
row with the error and the run goes on; an unavailable backend gives a ``skipped`` row with the reason, an unknown
name is an error before anything runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from recfx._version import __version__
from recfx.bench.accuracy import check_accuracy
from recfx.bench.config import BenchConfig
from recfx.bench.env import environment
from recfx.bench.plan import BackendChoice, plan_backends
from recfx.bench.results import BenchResult, BenchRow
from recfx.bench.stats import summarize
from recfx.bench.timing import (
    CudaGraphCall,
    measure_latency,
    measure_pipelined,
    warm_up,
)
from recfx.bench.workload import Workload, build_workloads, parse_dtype, variants

log = logging.getLogger(__name__)


class Progress(Protocol):
    """What the runner reports to a progress bar (``recfx bench`` uses rich)."""

    def start(self, total: int) -> None: ...

    def step(self, description: str) -> None: ...

    def advance(self) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def step(self, description: str) -> None:
        log.info("%s", description)

    def advance(self) -> None:
        pass


def run_bench(config: BenchConfig, progress: Progress | None = None,
              on_compiled: Callable[[str, Any], None] | None = None) -> BenchResult:
    """Run the benchmark described by ``config``.

    Args:
        config: a :class:`~recfx.bench.config.BenchConfig`.
        progress: optional progress reporter (``start(total)``, ``step(text)``, ``advance()``).
        on_compiled: optional ``f(requested backend name, CompiledModule)``, called after each backend compiles
            (before it is timed; the module is released after its rows), e.g. to read its compile report.

    Returns:
        A :class:`~recfx.bench.results.BenchResult`: one row per backend x variant x batch x CUDA-graph mode, plus
        one ``skipped`` row per backend that cannot run and one ``failed`` row per failed compile.

    Raises:
        ValueError: bad options (unknown model or backend, --seq for a model without one, CUDA asked for without a
            GPU...), before anything runs.

    Example:
        >>> from recfx.bench import BenchConfig, run_bench
        >>> result = run_bench(BenchConfig("dlrm-small", backends=("eager",), batches=(2,), iters=2, warmup=1,
        ...                                count_flops=False))
        >>> [(r.backend, r.status) for r in result.rows]
        [('eager', 'ok')]
    """
    progress = progress or _NoProgress()
    choices = plan_backends(config.backends)  # an unknown name fails here, before any work
    env = environment()  # before the run: its load average says whether something else was running
    device = config.resolved_device()
    if config.profile and device.type != "cuda":
        raise ValueError(f"profile times GPU kernels (torch.profiler's CUDA activity); the device is {device}: run "
                         "on a CUDA GPU or leave --profile out")
    dtype_name = config.resolved_dtype(device)
    dtype = parse_dtype(dtype_name)
    graph_modes = config.graph_modes(device)
    variant_list = variants(config.model, config.seqs, config.beams)
    runnable = [c for c in choices if c.runnable]
    order: dict[str, int] = {}
    for i, choice in enumerate(choices):
        order.setdefault(choice.requested, i)
    rows = [BenchRow(c.backend or c.requested, c.requested, "skipped", c.reason) for c in choices if not c.runnable]
    progress.start(len(variant_list) * (len(config.batches) + len(runnable) *
                                        (1 + len(config.batches) * len(graph_modes))))
    # streams, events and CUDA graphs are made on the current device: make it the one asked for (cuda:N)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        for workload in build_workloads(config.model, variant_list, device, dtype, config.seed):
            references = {}
            for batch in config.batches:
                progress.step(f"reference {_shape(workload, batch)}")
                references[batch] = workload.reference(workload.inputs(batch), config.count_flops)
                progress.advance()
            for choice in runnable:
                rows += _bench_backend(workload, choice, references, config, graph_modes, progress, on_compiled)
            del references
    rows.sort(key=lambda r: (order[r.requested], r.beam or 0, r.seq or 0, r.batch or 0, r.cuda_graphs))
    return BenchResult(model=config.model, device=str(device), dtype=dtype_name, config=config.to_dict(),
                       environment=env, rows=rows,
                       created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       recfx_version=__version__)


def _shape(workload: Workload, batch: int) -> str:
    extra = workload.variant.label()
    return f"batch {batch}" + (f", {extra}" if extra else "")


def _inductor_cache_counts() -> dict[str, int]:
    """Inductor's FX graph cache hits / misses / bypasses so far in this process (torch's counters): a compile's
    difference says whether it was served from the cache (a warm compile that misses is worth a look)."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {f"fxgraph_cache_{k}": int(inductor.get(f"fxgraph_cache_{k}", 0)) for k in ("hit", "miss", "bypass")}


def _bench_backend(workload: Workload, choice: BackendChoice, references: dict[int, tuple[Any, float | None]],
                   config: BenchConfig, graph_modes: tuple[bool, ...], progress: Progress,
                   on_compiled: Callable[[str, Any], None] | None = None) -> list[BenchRow]:
    import recfx

    assert choice.backend is not None
    base = BenchRow(choice.backend, choice.requested, "ok", seq=workload.variant.seq, beam=workload.variant.beam)
    progress.step(f"{choice.label}: compiling" + (f" ({workload.variant.label()})" if workload.variant.label() else ""))
    example = _compile_inputs(workload, config.batches)
    fp8 = recfx.backends.BACKENDS.get(choice.backend).fp8
    calibration = None
    if fp8 and config.calibration_batches:
        calibration = [workload.inputs(example[0].shape[0], seed=config.seed + 1 + i)
                       for i in range(config.calibration_batches)]
    cache_before = _inductor_cache_counts()
    t0 = time.perf_counter()
    try:
        if config.bundle is not None:  # time a saved bundle: loading replaces compiling
            compiled = recfx.load(config.bundle, device=workload.device)
        else:
            compiled = recfx.compile(workload.model, example, backend=choice.backend,
                                     config=recfx.CompileConfig(check_numerics=False), calibration=calibration,
                                     quant=config.quant_config() if fp8 else None)
    except Exception as err:  # a backend that fails is reported in its row, the run goes on
        log.debug("compile of %s failed", choice.backend, exc_info=True)
        _release(workload.device)
        for _ in range(1 + len(config.batches) * len(graph_modes)):
            progress.advance()
        return [dataclasses.replace(base, status="failed", reason=f"compile failed: {_describe(err)}")]
    compile_s = time.perf_counter() - t0
    if on_compiled is not None:
        on_compiled(choice.requested, compiled)
    report = compiled.report
    detail = {"capture_s": report.capture_seconds, "passes_s": report.passes_seconds,
              "backend_s": report.backend_seconds}
    detail.update({k: v - cache_before.get(k, 0) for k, v in _inductor_cache_counts().items()})
    progress.advance()
    rows = []
    for batch in config.batches:
        inputs = workload.inputs(batch)
        reference, flops = references[batch]
        for graphs in graph_modes:
            progress.step(f"{choice.label}: {_shape(workload, batch)}" + (", CUDA graph" if graphs else ""))
            row = dataclasses.replace(base, batch=batch, cuda_graphs=graphs, compile_s=compile_s,
                                      compile_detail=detail)
            try:
                _measure(row, compiled, inputs, reference, flops, workload.tokens_per_request(inputs), config)
            except Exception as err:  # one failing shape does not stop the others
                log.debug("%s at batch %d failed", choice.backend, batch, exc_info=True)
                row = dataclasses.replace(base, status="failed", batch=batch, cuda_graphs=graphs,
                                          compile_s=compile_s, compile_detail=detail, reason=_describe(err))
            rows.append(row)
            progress.advance()
    if config.profile and workload.device.type == "cuda":
        _profile_largest(rows, compiled, workload)
    del compiled
    _release(workload.device)
    return rows


def _profile_largest(rows: list[BenchRow], compiled: Callable[..., Any], workload: Workload) -> None:
    """Profile one call at the largest measured batch (the rows timed without ``--cuda-graphs``) into that row's
    ``profile``."""
    from recfx.bench.profile import profile_call

    done = [r for r in rows if r.status == "ok" and not r.cuda_graphs and r.batch is not None]
    if not done:
        return
    row = max(done, key=lambda r: r.batch or 0)
    inputs = workload.inputs(row.batch or 1)
    try:
        row.profile = profile_call(lambda: compiled(*inputs))
    except Exception as err:  # the timing rows stand without it
        log.warning("profile of %s at batch %s failed: %s", row.backend, row.batch, _describe(err), exc_info=True)


def _compile_inputs(workload: Workload, batches: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Example inputs for ``recfx.compile``: a batch of at least 2 keeps the batch dimension dynamic."""
    if workload.factory_inputs is not None:
        return workload.factory_inputs
    return workload.inputs(max(2, min(batches)))


def _measure(row: BenchRow, compiled: Callable[..., Any], inputs: tuple[torch.Tensor, ...], reference: Any,
             flops: float | None, tokens_per_request: int | None, config: BenchConfig) -> None:
    """Fill ``row`` in place: warm-up, accuracy, latency, throughput, memory."""
    device = inputs[0].device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    if row.cuda_graphs:
        t0 = time.perf_counter()
        call: Callable[[], Any] = CudaGraphCall(compiled, inputs)
        row.first_call_ms = (time.perf_counter() - t0) * 1e3
        warm_up(call, config.warmup, device)
    else:
        def call() -> Any:
            return compiled(*inputs)

        row.first_call_ms = warm_up(call, config.warmup, device)
    row.accuracy = check_accuracy(reference, call())
    samples = measure_latency(call, config.timing, device)
    row.latency_ms = latency = summarize(samples.wall_ms)
    row.device_ms = device_stats = summarize(samples.device_ms) if samples.device_ms else None
    batch = inputs[0].shape[0]
    if config.pipelined:
        pipe = measure_pipelined(call, len(samples.wall_ms), device)
        row.throughput_rps = pipe.calls * batch / pipe.wall_s
        row.device_throughput_rps = pipe.calls * batch / pipe.device_s if pipe.device_s else None
    else:  # requests/s from the synchronous latency
        row.throughput_rps = batch / (latency.mean / 1e3)
    if tokens_per_request is not None:
        row.tokens_per_s = row.throughput_rps * tokens_per_request
    row.flops = flops
    p50 = (device_stats or latency).p50
    if flops is not None and p50 > 0:
        row.tflops = flops / (p50 / 1e3) / 1e12
    if cuda:
        row.peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20


def _describe(err: BaseException) -> str:
    text = str(err).strip() or repr(err)
    return f"{type(err).__name__}: {text}"


def _release(device: torch.device) -> None:
    """Free what a backend held before the next one compiles (compiled code, cached GPU blocks)."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


__all__ = ["Progress", "run_bench"]
