"""fp8_evaluate: per-layer SQNR, sensitivity ranking and auto_exclude (fewest layers kept in high precision)."""

from __future__ import annotations

import torch

from recfx import QuantConfig
from recfx.passes.quant import FP8_PASSES
from recfx.passes.quant.evaluate import build_probe, output_cosine, run_all

ops = torch.ops.recfx


def _fragile(model: torch.nn.Module) -> torch.nn.Module:
    """o_proj gets a huge weight column on an input channel that is always 0 (v_proj's row 0 is 0): the float model
    does not notice, but a per-tensor FP8 weight scale flushes every other o_proj weight to 0 (they are scaled up
    so that attention dominates the residual stream)."""
    with torch.no_grad():
        model.attn.v_proj.weight[0] = 0.0
        model.attn.o_proj.weight[:, 1:] *= 20
        model.attn.o_proj.weight[:, 0] = 1e7
    return model


def test_sensitivity_ranks_the_fragile_layer_first(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    quant = QuantConfig(weight="per_tensor", sensitivity=True)
    _, ctx = fp8.run(_fragile(model), (x,), ["fp8_annotate", "fp8_prepare", "fp8_calibrate", "fp8_evaluate"],
                     quant=quant)
    state = ctx.fp8_state
    ranking = [m for m, _ in state.sensitivity]
    assert ranking[0] == "attn.o_proj" and len(ranking) == 6
    errors = dict(state.sensitivity)
    assert errors["attn.o_proj"] > 100 * errors[ranking[1]]
    assert state.layers["attn.o_proj"].sqnr_db < 10 < min(r.sqnr_db for n, r in state.layers.items()
                                                           if n != "attn.o_proj")


def test_auto_exclude_keeps_the_fewest_layers(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    quant = QuantConfig(weight="per_tensor", auto_exclude=0.99)
    _, ctx = fp8.run(_fragile(model), (x,), list(FP8_PASSES), quant=quant)
    report = ctx.report_sections["fp8"]
    assert report.auto_excluded == ["attn.o_proj"]
    assert report.auto_exclude_cosine >= 0.99 and report.quantized == 5
    assert ("attn.o_proj", "auto_exclude") in report.excluded
    assert report.output_cosine >= 0.99  # measured on the lowered graph against the float model
    with torch.no_grad():
        plain, _ = fp8.run(model, (x,), list(FP8_PASSES), quant=QuantConfig(weight="per_tensor"))
        assert output_cosine([model(x)], [plain(x)]) < 0.99  # without auto_exclude the target is missed


def test_auto_exclude_tight_target_excludes_more(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    _, ctx_loose = fp8.run(model, (x,), list(FP8_PASSES), quant=QuantConfig(auto_exclude=0.9))
    assert ctx_loose.fp8_state.auto_excluded == []
    achieved = ctx_loose.report_sections["fp8"].output_cosine
    target = 1 - (1 - achieved) / 10  # ten times closer to 1 than plain FP8 gets
    _, ctx = fp8.run(model, (x,), list(FP8_PASSES), quant=QuantConfig(auto_exclude=target))
    report = ctx.report_sections["fp8"]
    assert 0 < len(report.auto_excluded) <= 6 and report.auto_exclude_cosine >= target
    assert report.quantized == 6 - len(report.auto_excluded)


def test_probe_shares_tensors_and_switches(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    gm, _ = fp8.run(model, (x,), ["fp8_annotate", "fp8_prepare", "fp8_calibrate"])
    probe, probes = build_probe(gm)
    assert set(probes) == set(fp8.DEFAULT_QUANTIZED)
    assert probes["attn.q_proj"].weight is model.attn.q_proj.weight  # no copies of the float weights
    ref = run_all(probe, [(x,)])
    with torch.no_grad():
        assert output_cosine([model(x)], ref) > 0.999999
    for p in probes.values():
        p.enabled = True
    assert 0.99 < output_cosine(ref, run_all(probe, [(x,)])) < 0.999999
