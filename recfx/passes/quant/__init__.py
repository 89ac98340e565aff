"""FP8 (E4M3) post-training quantization as compiler passes (docs/fp8.md).

annotate (policy -> per-linear plans) -> prepare (observers) -> calibrate (run batches) -> evaluate (per-layer SQNR,
sensitivity, auto_exclude) -> convert (FP8 weights, activation Q/DQ) -> lower (FP8 GEMM ops) -> report.
Each step is a registered pass of stage ``quantize``; the ``*-fp8`` backends run :func:`fp8_pipeline`.
"""

import sys as _sys
from collections.abc import Sequence as _Sequence

from recfx._plugins import import_submodules as _import_submodules
from recfx.passes.base import PassContext
from recfx.passes.pipelines import FP8_PASSES
from recfx.passes.quant.config import QuantConfig, QuantRule
from recfx.passes.quant.report import Fp8Report
from recfx.passes.quant.state import resolve_config


def fp8_pipeline(ctx: PassContext) -> list[str]:
    """The ordered pass names an FP8 backend runs, after checking the user's quantization options.

    Args:
        ctx: the pipeline context; ``ctx.quant`` is a :class:`QuantConfig` or None (the default) and
            ``ctx.calibration`` the calibration batches or None.

    Returns:
        ``["fp8_annotate", "fp8_prepare", "fp8_calibrate", "fp8_evaluate", "fp8_convert", "fp8_lower",
        "fp8_report"]``.

    Raises:
        TypeError: ``quant`` is not a QuantConfig.
        ValueError: static activation scales without calibration data, or an empty calibration sequence.

    Example:
        >>> from recfx.passes import PassContext
        >>> fp8_pipeline(PassContext())[:3]
        ['fp8_annotate', 'fp8_prepare', 'fp8_calibrate']
    """
    cfg = resolve_config(ctx.quant)
    data = ctx.calibration
    if cfg.is_static and data is None:
        raise ValueError(f"QuantConfig(activation={cfg.static_modes[0]!r}) needs calibration data: pass "
                         "calibration=[batch, ...] (tuples of tensors like the example inputs) to recfx.compile, or "
                         "use the default dynamic per-token activations")
    if isinstance(data, _Sequence) and len(data) == 0:
        raise ValueError("the calibration data is empty: pass at least one batch (a tuple of tensors like the "
                         "example inputs), or calibration=None for dynamic per-token activations")
    return list(FP8_PASSES)


_import_submodules(_sys.modules[__name__])

__all__ = ["FP8_PASSES", "Fp8Report", "QuantConfig", "QuantRule", "fp8_pipeline"]
