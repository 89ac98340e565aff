"""Calibrators vs numpy references; fp8_calibrate's errors name the layer and the batch; observers and stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfx import QuantConfig
from recfx.analysis.stats import RunningStats, tensor_stats
from recfx.errors import PassError
from recfx.ops.fp8_testing import e4m3_table
from recfx.passes.quant.calibrators import CALIBRATORS, MSE_HIGH, MSE_LOW, MSE_STEPS
from recfx.passes.quant.state import PLAN, observers

STATIC = QuantConfig(activation="static_per_tensor", progress=False)


def _batches(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4000, generator=g) * (1 + i) + 0.1 for i in range(n)]  # growing range: the histogram grows


def _stats(batches: list[torch.Tensor]) -> RunningStats:
    s = RunningStats()
    for b in batches:
        s.update(b)
    return s


def _np_fake_quant(v: np.ndarray, amax: float) -> np.ndarray:
    """Numpy E4M3 quantize-dequantize (nearest table value; ties do not occur on random data)."""
    values, _ = e4m3_table()
    scale = amax / 448.0
    mag = np.minimum(np.abs(v) / scale, 448.0)
    idx = np.abs(mag[:, None] - values[None, :]).argmin(axis=1)
    return np.sign(v) * values[idx] * scale


def test_max_and_moments_match_numpy() -> None:
    batches = _batches()
    s = _stats(batches)
    data = torch.cat(batches).double().numpy()
    assert CALIBRATORS.get("max")(s, 99.99) == pytest.approx(np.abs(data).max(), rel=1e-6)
    st = s.stats()
    assert st.variance == pytest.approx(data.var(), rel=1e-9)
    centered = data - data.mean()
    assert st.kurtosis == pytest.approx((centered**4).mean() / data.var() ** 2, rel=1e-9)
    assert st.abs_p99 == pytest.approx(np.percentile(np.abs(data), 99), abs=s.bin_width)


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_within_one_bin_of_numpy(p: float) -> None:
    batches = _batches()
    s = _stats(batches)
    data = np.abs(torch.cat(batches).double().numpy())
    got = CALIBRATORS.get("percentile")(s, p)
    # numpy's percentile lies in the bin whose upper edge we return: within one bin width, up to sampling gaps
    assert (data <= got).mean() >= p / 100 - 1 / data.size
    assert (data <= got - s.bin_width).mean() <= p / 100 + 1 / data.size
    assert abs(got - np.percentile(data, p)) <= 0.05 * got


def test_mse_search_matches_the_numpy_sweep() -> None:
    batches = [b.clone() for b in _batches()]
    batches[0][:3] = torch.tensor([60.0, -75.0, 90.0])  # outliers
    s = _stats(batches)
    data = torch.cat(batches).double().numpy()
    amax = np.abs(data).max()
    grid = amax * np.geomspace(MSE_LOW, MSE_HIGH, MSE_STEPS)
    errors = np.array([((data - _np_fake_quant(data, a)) ** 2).mean() for a in grid])
    got = CALIBRATORS.get("mse")(s, 99.99)
    got_err = ((data - _np_fake_quant(data, got)) ** 2).mean()
    assert MSE_LOW * amax <= got <= MSE_HIGH * amax
    assert got_err <= errors.min() * 1.05, (got, grid[errors.argmin()], got_err, errors.min())
    clipped = ((data - _np_fake_quant(data, MSE_LOW * amax)) ** 2).mean()
    assert got_err < clipped  # FP8 keeps its relative precision at any scale: clipping outliers costs more


def test_entropy_calibrator_clips_heavy_tails() -> None:
    batches = _batches()
    s = _stats(batches)
    amax = CALIBRATORS.get("entropy")(s, 99.99)
    assert 0 < amax <= s.abs_max


def test_tensor_stats_exact() -> None:
    w = torch.randn(64, 33)
    st = tensor_stats(w)
    a = w.double().numpy().ravel()
    assert st.variance == pytest.approx(a.var()) and st.abs_max == pytest.approx(np.abs(a).max())
    assert st.abs_p99 == pytest.approx(np.sort(np.abs(a))[int(np.ceil(0.99 * a.size)) - 1])


def test_static_calibration_sets_amax_per_observer(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    batches = [(x * (i + 1),) for i in range(3)]
    gm, ctx = fp8.run(model, (x,), ["fp8_annotate", "fp8_prepare", "fp8_calibrate"], quant=STATIC,
                      calibration=batches)
    obs = observers(gm)
    assert len(obs) == 3  # q/k/v share one input; o_proj; the two experts share one
    assert all(o.batches == 3 for o in obs.values())
    plans = [n.meta[PLAN] for n in gm.graph.nodes if PLAN in n.meta]
    assert all(p.x_amax == obs[p.observer].stats.abs_max for p in plans)
    assert ctx.fp8_state.calibrated_batches == 3


@pytest.mark.parametrize(("values", "counts"), [((float("nan"),), "1 NaN"), ((float("inf"), -float("inf")), "2 Inf"),
                                                ((float("nan"), float("inf")), "1 NaN and 1 Inf")])
def test_nonfinite_calibration_data_names_batch_input_and_kind(fp8, toy, values, counts) -> None:  # type: ignore[no-untyped-def]
    """An Inf in the data is reported as Inf (the observers see it only after a norm has turned it into NaN)."""
    model, (x,) = toy
    bad = x.clone()
    for i, v in enumerate(values):
        bad[1, 3, 5 + i] = v
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PassError, match=rf"calibration batch 2: input 'x' holds {counts} \(of {x.numel()} values\)"):
        fp8.run(model, (x,), ["fp8_annotate", "fp8_prepare", "fp8_calibrate"], quant=STATIC,
                calibration=[(x,), (x,), (bad,)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched


def test_nonfinite_example_inputs_are_an_error_when_they_calibrate(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    """Without calibration data the example inputs are observed: NaN there used to compile with cosine nan."""
    model, (x,) = toy
    bad = x.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(PassError, match=r"the example inputs \(used for calibration\): input 'x' holds 1 Inf"):
        fp8.run(model, (bad,), ["fp8_annotate", "fp8_prepare", "fp8_calibrate"], quant=QuantConfig(progress=False))


def test_empty_and_malformed_calibration(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    model, (x,) = toy
    names = ["fp8_annotate", "fp8_prepare", "fp8_calibrate"]
    with pytest.raises(PassError, match="calibration data is empty"):
        fp8.run(model, (x,), names, quant=STATIC, calibration=iter([]))
    with pytest.raises(PassError, match="calibration batch 1 has 2 tensors"):
        fp8.run(model, (x,), names, quant=STATIC, calibration=[(x,), (x, x)])
    with pytest.raises(PassError, match=r"calibration batch 0: input 'x' is torch.float64\[2, 8, 16\]"):
        fp8.run(model, (x,), names, quant=STATIC, calibration=[(x.double(),)])
    with pytest.raises(PassError, match="needs calibration data|need calibration data"):
        fp8.run(model, (x,), names, quant=STATIC)



def test_non_contiguous_calibration_batches_are_observed_like_call_inputs() -> None:
    """Fuzz seed 25: after SDPA, ``o.transpose(1, 2)`` is row-major for row-major inputs, so its ``.contiguous()``
    goes (remove_noops) and a view merges the heads: the graph relies on row-major inputs, which CompiledModule
    gives it. A transposed calibration batch failed in that view ("view size is not compatible")."""
    import recfx
    from tests.fuzz.generator import generate

    fm = generate(25)
    quant = QuantConfig(weight="per_tensor", activation="static_per_tensor", progress=False, eval_batches=1)
    transposed = [fm.inputs(3, 10 + i, contiguous=False) for i in range(2)]
    assert not transposed[0][0].is_contiguous()
    compiled = recfx.compile(fm.module, fm.inputs(2, 0), backend="eager-fp8", quant=quant, calibration=transposed)
    same = recfx.compile(fm.module, fm.inputs(2, 0), backend="eager-fp8", quant=quant,
                         calibration=[tuple(t.contiguous() for t in batch) for batch in transposed])
    x = fm.inputs(5, 1, contiguous=False)
    for a, b in zip(compiled(*x), same(*x), strict=True):
        assert torch.equal(a, b)  # the same scales as from row-major copies of the batches
