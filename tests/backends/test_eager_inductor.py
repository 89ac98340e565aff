import dataclasses

import pytest
import torch

import recfx
from recfx.models import ONEREC_CONFIGS, OneRecModel, get_model

F64_TOL = dict(rtol=1e-9, atol=1e-9)  # float64 graphs: only reassociation-level differences


def _check(model, inputs, backend, fresh_inputs):
    compiled = recfx.compile(model, inputs, backend=backend)
    assert compiled.report.backend == backend
    for check in compiled.report.numerics:
        assert check.exact == 1.0 if check.exact is not None else check.cosine > 1 - 1e-12
    with torch.inference_mode():
        want, got = model(*fresh_inputs), compiled(*fresh_inputs)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for w, g in zip(want, got):
        if w.dtype.is_floating_point:
            torch.testing.assert_close(g, w, **F64_TOL)
        else:
            assert torch.equal(g, w)
    return compiled


@pytest.mark.parametrize("name", ["onerec-tiny", "ksa-tiny", "dlrm-small"])
def test_eager_backend_matches_float64_model(name):
    spec = get_model(name)
    model = spec.build(dtype=torch.float64)
    _check(model, spec.example_inputs(2, dtype=torch.float64), "eager",
           spec.example_inputs(3, seed=7, dtype=torch.float64))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onerec-tiny", "ksa-tiny", "dlrm-small"])
def test_inductor_backend_matches_float64_model(name):
    spec = get_model(name)
    if name == "onerec-tiny":  # same code paths (SwiGLU + MoE layer, beam search) at half the depth: CI time
        cfg = dataclasses.replace(ONEREC_CONFIGS["onerec-tiny"], n_layers=2, n_moe_layers=1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = OneRecModel(cfg).double().eval()
    else:
        model = spec.build(dtype=torch.float64)
    _check(model, spec.example_inputs(2, dtype=torch.float64), "inductor",
           spec.example_inputs(3, seed=7, dtype=torch.float64))


def test_inductor_rejects_unknown_options():
    from torch import nn

    with pytest.raises(ValueError, match="unknown inductor backend_options"):
        recfx.compile(nn.Linear(2, 2).eval(), (torch.randn(2, 2),), backend="inductor",
                      config=recfx.CompileConfig(backend_options={"turbo": True}))
