"""``BenchConfig``: everything a bench run is told, in one frozen, validated object (the CLI builds it)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from recfx.bench.timing import TimingOptions
from recfx.bench.workload import DTYPES
from recfx.config import ConfigBase

GRAPH_MODES = ("auto", "off", "on", "both")


@dataclasses.dataclass(frozen=True)
class BenchConfig(ConfigBase):
    """Options of :func:`recfx.bench.run_bench`.

    Attributes:
        model: a registered model name or ``package.module:factory``.
        backends: backend names in order (the first that runs is the speedup baseline), ``auto``/``auto-fp8``.
        batches: batch sizes (requests per call) to sweep.
        seqs: sequence lengths to sweep (``None``: the model's default).
        beams: beam widths to sweep, onerec only (``None``: the model's default).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present).
        dtype: ``fp32``/``bf16``/``fp16`` of the weights and float inputs (``None``: bf16 on CUDA, fp32 on CPU).
        warmup / iters / time_budget: see :class:`~recfx.bench.timing.TimingOptions`.
        cuda_graphs: ``off``, ``on``, ``both`` or ``auto`` (both on CUDA, off on CPU).
        pipelined: also measure pipelined throughput (calls back to back, one sync at the end).
        count_flops: count the model's FLOPs for TFLOP/s (``torch.utils.flop_counter`` on the reference call).
        calibration_batches: random batches passed as ``calibration=`` to FP8 backends (0: none, for the dynamic
            per-token mode, which needs none).
        quant: ``recfx.QuantConfig`` fields for FP8 backends, as a dict (``{"activation": "static_per_tensor"}``);
            ``None``: the defaults.
        seed: seed of the weights and inputs.
        bundle: a bundle folder (``recfx compile --out``) to time instead of compiling: the one backend is the
            bundle's, loaded with ``recfx.load``; its load time is reported as the compile time.
        profile: on CUDA, profile one call at the largest batch of each backend (``torch.profiler``): GPU time by
            kernel class and each GEMM shape's TFLOP/s, in the row's ``profile``.
    """

    model: str
    backends: tuple[str, ...] = ("auto",)
    batches: tuple[int, ...] = (1, 8)
    seqs: tuple[int | None, ...] = (None,)
    beams: tuple[int | None, ...] = (None,)
    device: str = "auto"
    dtype: str | None = None
    warmup: int = 3
    iters: int = 100
    time_budget: float | None = 1.0
    cuda_graphs: str = "auto"
    pipelined: bool = True
    count_flops: bool = True
    calibration_batches: int = 0
    quant: dict[str, Any] | None = None
    seed: int = 0
    bundle: str | None = None
    profile: bool = False

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model must be a registered model name or 'package.module:factory'")
        if not self.backends:
            raise ValueError("give at least one backend")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ValueError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if not self.seqs or not self.beams:
            raise ValueError("seqs and beams need at least one value (None for the model's default)")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or None for the device default), "
                             f"got {self.dtype!r}")
        if self.cuda_graphs not in GRAPH_MODES:
            raise ValueError(f"cuda_graphs must be one of {GRAPH_MODES}, got {self.cuda_graphs!r}")
        if self.calibration_batches < 0:
            raise ValueError(f"calibration_batches must be >= 0, got {self.calibration_batches}")
        if self.quant is not None and self.quant_config().is_static and not self.calibration_batches:
            raise ValueError("static FP8 activation scales need calibration data: give calibration_batches "
                             "(--calibration N) or use the dynamic per-token mode")
        TimingOptions(self.warmup, self.iters, self.time_budget)  # raises on bad warmup / iters / time_budget
        if self.bundle is not None and len(self.backends) != 1:
            raise ValueError(f"a bundle holds one backend; got backends {list(self.backends)}")

    def quant_config(self) -> Any:
        """The ``recfx.QuantConfig`` for FP8 backends (its own progress bar off: the bench shows one).

        Raises:
            ValueError / TypeError: unknown or bad ``quant`` fields.
        """
        from recfx.passes.quant import QuantConfig

        return QuantConfig.from_dict({**(self.quant or {}), "progress": False})

    @property
    def timing(self) -> TimingOptions:
        return TimingOptions(self.warmup, self.iters, self.time_budget)

    def resolved_device(self) -> torch.device:
        """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``.

        Raises:
            ValueError: CUDA requested but not available, or an unparsable device.
        """
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"bad device {self.device!r}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but torch sees no CUDA GPU; use --device cpu")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        return device

    def resolved_dtype(self, device: torch.device) -> str:
        if self.dtype is not None:
            return self.dtype
        return "bf16" if device.type == "cuda" else "fp32"

    def graph_modes(self, device: torch.device) -> tuple[bool, ...]:
        """CUDA graphs off/on per measurement.

        Raises:
            ValueError: CUDA graphs asked for on a CPU run.
        """
        if device.type != "cuda":
            if self.cuda_graphs in ("on", "both"):
                raise ValueError("CUDA graphs need --device cuda; use --cuda-graphs off (or auto) on CPU")
            return (False,)
        return {"auto": (False, True), "both": (False, True), "on": (True,), "off": (False,)}[self.cuda_graphs]
