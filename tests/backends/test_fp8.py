"""eager-fp8 / inductor-fp8: registration, auto-fp8 choice, recfx.compile options, numerics, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import recfx
from recfx.analysis.numerics import sqnr_db
from recfx.backends import BACKENDS, resolve_backend
from recfx.errors import BackendUnavailableError, PassError

ops = torch.ops.recfx


class _Block(nn.Module):
    """norm -> MLP (two quantizable linears) -> residual -> head."""

    def __init__(self, d: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, 100)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head(h + self.mlp(torch.nn.functional.layer_norm(h, h.shape[-1:])))


@pytest.fixture
def block() -> tuple[nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return _Block().eval(), (torch.randint(0, 100, (2, 12)),)


def test_registered_with_priorities() -> None:
    eager, inductor = BACKENDS.get("eager-fp8"), BACKENDS.get("inductor-fp8")
    assert eager.fp8 and inductor.fp8 and (eager.priority, inductor.priority) == (1, 11)
    assert issubclass(eager, BACKENDS.get("eager")) and issubclass(inductor, BACKENDS.get("inductor"))
    be, why = resolve_backend("auto-fp8")
    assert be.fp8 and "auto-fp8" in why
    assert not resolve_backend("auto")[0].fp8


def test_eager_fp8_compile_and_report(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    fast = recfx.compile(model, inputs, backend="eager-fp8")
    gm = fast.graph_module
    assert sum(n.target is ops.fp8_linear.default for n in gm.graph.nodes) == 2  # mlp only; head stays float
    fresh = (torch.randint(0, 100, (5, 12)),)
    with torch.inference_mode():
        assert sqnr_db(model(*fresh), fast(*fresh)) > 25
    section = fast.report.sections["fp8"]
    assert section.quantized == 2 and section.output_cosine > 0.999
    text = str(fast.report)
    assert "FP8 E4M3" in text and "mlp.0" in text
    assert fast.report.to_dict()["sections"]["fp8"]["quantized"] == 2


def test_inductor_fp8_matches_eager_fp8(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    quant = recfx.QuantConfig(activation="static_per_tensor", calibrator="percentile", progress=False)
    calib = [(torch.randint(0, 100, (4, 12)),) for _ in range(3)]
    eager = recfx.compile(model, inputs, backend="eager-fp8", quant=quant, calibration=calib)
    fast = recfx.compile(model, inputs, backend="inductor-fp8", quant=quant, calibration=calib)
    assert fast.report.backend == "inductor-fp8"
    fresh = (torch.randint(0, 100, (3, 12)),)
    with torch.inference_mode():
        torch.testing.assert_close(fast(*fresh), eager(*fresh), rtol=1e-4, atol=1e-4)
    assert fast.report.sections["fp8"].batches == 3


def test_static_without_calibration_and_options_on_float_backends(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    with pytest.raises(ValueError, match="needs calibration data"):
        recfx.compile(model, inputs, backend="eager-fp8", quant=recfx.QuantConfig(activation="static_per_tensor"))
    with pytest.raises(ValueError, match="does not quantize"):
        recfx.compile(model, inputs, backend="eager", quant=recfx.QuantConfig())
    with pytest.raises(TypeError, match="must be a recfx.QuantConfig"):
        recfx.compile(model, inputs, backend="eager-fp8", quant="fp8")


def test_failed_calibration_leaves_the_model_untouched(block) -> None:  # type: ignore[no-untyped-def]
    model, inputs = block
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        out_before = model(*inputs)
    quant = recfx.QuantConfig(activation="static_per_tensor", progress=False)
    with torch.no_grad():
        model.embed.weight[7, 0] = float("nan")  # only token 7 is poisoned: the second batch hits it
    with pytest.raises(PassError, match=r"calibration batch 1: NaN in the activation feeding layer mlp\.0"):
        recfx.compile(model, inputs, backend="eager-fp8", quant=quant,
                      calibration=[(torch.full((2, 12), 3),), (torch.full((2, 12), 7),)])
    with torch.no_grad():
        model.embed.weight[7, 0] = before["embed.weight"][7, 0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.inference_mode():
        assert torch.equal(model(*inputs), out_before)


def test_cuda_fp8_without_a_gpu_is_a_clear_error(block) -> None:  # type: ignore[no-untyped-def]
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    model, inputs = block
    with pytest.raises(BackendUnavailableError, match="cuda-fp8.*CUDA GPU with FP8 tensor cores.*eager-fp8"):
        recfx.compile(model, inputs, backend="cuda-fp8")
    assert resolve_backend("auto-fp8")[0].name != "cuda-fp8"  # auto may choose; here it chooses a CPU backend
    assert BACKENDS.get("cuda-fp8").priority > BACKENDS.get("inductor-fp8").priority  # first choice on a GPU
