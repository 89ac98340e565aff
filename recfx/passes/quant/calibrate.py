"""``fp8_calibrate``: run the calibration batches (or the example inputs) through the observed graph."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch.fx import GraphModule
from tqdm.auto import tqdm

from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.calibrators import CALIBRATORS
from recfx.passes.quant.state import Fp8State, NonFiniteActivation, observers, plans

log = logging.getLogger(__name__)


def normalize_batch(batch: Any, specs: Sequence[Any], index: int) -> tuple[torch.Tensor, ...]:
    """A calibration batch as a tuple of tensors that fits the captured inputs (count, dtype, rank, static dims).

    Raises:
        TypeError / ValueError: naming the batch index and what was expected.
    """
    return _normalize(batch, specs, f"calibration batch {index}")


def check_finite(batch: Sequence[torch.Tensor], specs: Sequence[Any], label: str) -> None:
    """Refuse NaN or Inf in a batch's float inputs, named as they are (an Inf turns into NaN a few ops later, so
    the observers alone would call it NaN).

    Raises:
        ValueError: naming the batch, the input and how many NaN / Inf values it holds.
    """
    for i, t in enumerate(batch):
        if not t.is_floating_point():
            continue
        nonfinite = int((~torch.isfinite(t)).sum())
        if nonfinite:
            nan = int(torch.isnan(t).sum())
            counts = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (nonfinite - nan, "Inf")) if n)
            name = specs[i].name if i < len(specs) else f"#{i}"
            raise ValueError(f"{label}: input {name!r} holds {counts} (of {t.numel()} values); FP8 calibration needs "
                             "finite data: clean the inputs (every batch must be finite)")


def _normalize(batch: Any, specs: Sequence[Any], label: str) -> tuple[torch.Tensor, ...]:
    if isinstance(batch, torch.Tensor):
        batch = (batch,)
    if not isinstance(batch, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in batch):
        raise TypeError(f"{label} must be a tuple of tensors like the example inputs, got "
                        f"{type(batch).__name__}")
    if specs and len(batch) != len(specs):
        raise ValueError(f"{label} has {len(batch)} tensors, the model takes {len(specs)} "
                         f"({', '.join(map(str, specs))})")
    for spec, t in zip(specs, batch):
        if t.dtype != spec.dtype or t.dim() != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, t.shape)):
            raise ValueError(f"{label}: input {spec.name!r} is {t.dtype}{list(t.shape)}, expected {spec}")
    # The graph runs on row-major inputs, as CompiledModule.forward hands them (views traced for row-major inputs
    # rely on it): a transposed calibration tensor is observed with the values it holds, in that layout.
    return tuple(t.contiguous() for t in batch)


def calibration_source(ctx: PassContext, state: Fp8State) -> tuple[Iterable[Any], str]:
    """The batches to observe and a description; the example inputs when no calibration data was given."""
    data = ctx.calibration
    if data is None:
        if state.config.is_static:
            raise ValueError("static FP8 activation scales need calibration data: pass calibration=[batch, ...] "
                             "to recfx.compile, or use QuantConfig(activation='dynamic_per_token')")
        return [tuple(ctx.example_inputs)], "the example inputs (no calibration data given)"
    if isinstance(data, (torch.Tensor, str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"calibration must be an iterable of batches (tuples of tensors), got {type(data).__name__}")
    return data, "calibration data"


def _no_amax(gm: GraphModule) -> list[str]:
    obs = observers(gm)
    return [f"{n.name}: static layer {p.name} has no calibrated amax" for n, p in plans(gm)
            if p.static and p.x_amax is None] + [f"observer {k} saw no batch" for k, o in obs.items() if not o.batches]


@register_pass("fp8_calibrate", stage="quantize", postcondition=_no_amax)
class Fp8Calibrate:
    """Every observer has seen the calibration data and every static layer has an activation amax."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        state = Fp8State.of(self.ctx)
        cfg = state.config
        if not plans(gm):
            return PassResult(gm, modified=False, detail="nothing to calibrate")
        data, source = calibration_source(self.ctx, state)
        captured = self.ctx.captured
        specs = captured.input_specs if captured is not None else []
        total = len(data) if isinstance(data, Sequence) else None
        if cfg.calibration_batches is not None and total is not None:
            total = min(total, cfg.calibration_batches)
        seen = 0
        quiet = not cfg.progress or self.ctx.calibration is None
        bar = tqdm(data, total=total, desc="fp8 calibration", unit="batch", disable=quiet, leave=False)
        with torch.no_grad():
            for i, batch in enumerate(bar):
                if cfg.calibration_batches is not None and i >= cfg.calibration_batches:
                    break
                label = f"calibration batch {i}" if self.ctx.calibration is not None else \
                    "the example inputs (used for calibration)"
                batch = _normalize(batch, specs, label)
                check_finite(batch, specs, label)
                try:
                    gm(*batch)
                except NonFiniteActivation as err:
                    raise ValueError(f"{label}: {err.what} in the activation feeding layer "
                                     f"{', '.join(err.layers)}; clean the calibration data (every batch must be "
                                     "finite)") from None
                if len(state.eval_data) < cfg.eval_batches:
                    state.eval_data.append(batch)
                seen += 1
        bar.close()
        if seen == 0:
            raise ValueError("the calibration data is empty: pass at least one batch (a tuple of tensors like the "
                             "example inputs)")
        state.calibrated_batches, state.data_source = seen, source
        calibrate = CALIBRATORS.get(cfg.calibrator)
        obs = observers(gm)
        for _, plan in plans(gm):
            if plan.static:
                plan.x_amax = calibrate(obs[plan.observer].stats, cfg.percentile)
        log.info("fp8_calibrate: %d batches from %s, %d observers", seen, source, len(obs))
        return PassResult(gm, modified=False, detail=f"{seen} batches from {source}")
