"""fp8_evaluate's probe and fp8_convert share the FP8 copies of the weights: each weight is quantized once."""

from __future__ import annotations

import collections

import torch

import recfx
from recfx.ops import fp8 as fp8_ops
from recfx.passes.quant import convert as convert_mod
from recfx.passes.quant import evaluate as evaluate_mod


def test_each_weight_is_quantized_once_and_the_buffers_are_its_copy(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: collections.Counter[int] = collections.Counter()
    real = fp8_ops.quantize_weight

    def counting(w, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[id(w)] += 1
        return real(w, *args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "quantize_weight", counting)
    monkeypatch.setattr(convert_mod, "quantize_weight", counting)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)).eval()
    x = torch.randn(8, 64)
    compiled = recfx.compile(model, (x,), backend="eager-fp8", quant=recfx.QuantConfig(default_exclusions=False))
    assert len(calls) == 2 and set(calls.values()) == {1}
    fp8_buffers = [b for name, b in compiled.graph_module.named_buffers() if b.dtype == torch.float8_e4m3fn]
    want = [real(layer.weight.detach())[0] for layer in (model[0], model[2])]
    assert len(fp8_buffers) == 2
    assert all(any(torch.equal(b.view(torch.uint8), w.view(torch.uint8)) for b in fp8_buffers) for w in want)
    assert all(r.sqnr_db > 20 for r in compiled.report.sections["fp8"].layers)
