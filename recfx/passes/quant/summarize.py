"""``fp8_report``: build the FP8 accuracy report and hand it to ``recfx.compile``'s report sections."""

from __future__ import annotations

import collections
import logging

import torch
from torch.fx import GraphModule

from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.evaluate import run_all
from recfx.passes.quant.lower import fp8_gemms
from recfx.passes.quant.report import Fp8Report, compare_model_outputs
from recfx.passes.quant.state import PLAN, Fp8State

log = logging.getLogger(__name__)


def _rule(reason: str) -> str:
    """The rule part of a decision's reason ("default: head kept in high precision", "rule #0 ...")."""
    return reason.split(" (", 1)[0] if reason.startswith("not in linear form") else reason


@register_pass("fp8_report", stage="quantize")
class Fp8ReportPass:
    """The FP8 report (per-layer SQNR, statistics, model-level error) is in ctx.report_sections["fp8"]."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        state = Fp8State.of(self.ctx)
        gemms = fp8_gemms(gm)
        names = [n.meta[PLAN].name for n in gemms if PLAN in n.meta]
        excluded: dict[str, str] = {}
        for d in state.decisions:
            if not d.quantize:
                excluded.setdefault(d.info.module_path, d.reason)
        for module in state.auto_excluded:
            excluded[module] = "auto_exclude"
        report = Fp8Report(
            config=state.config.to_dict(), data_source=state.data_source, batches=state.calibrated_batches,
            linears=max(len(state.decisions), len(gemms)), quantized=len(gemms),
            excluded_by=dict(collections.Counter(_rule(d.reason) for d in state.decisions if not d.quantize)),
            layers=[state.layers[n] for n in names if n in state.layers], excluded=sorted(excluded.items()),
            sensitivity=state.sensitivity, auto_excluded=state.auto_excluded,
            auto_exclude_cosine=state.auto_exclude_cosine, warnings=list(state.warnings))
        model = self.ctx.model
        data = state.eval_data or [tuple(self.ctx.example_inputs)]
        if model is not None and gemms:
            with torch.inference_mode():
                report.outputs = compare_model_outputs(run_all(model, data), run_all(gm, data), state.config.top_k)
        self.ctx.report_sections["fp8"] = report
        log.info("fp8_report: %d FP8 GEMMs, output cosine %s", len(gemms), report.output_cosine)
        return PassResult(gm, modified=False, detail=f"{len(gemms)} FP8 GEMMs")
