"""recfx/passes/base.py: the typed pass context that recfx.compile fills and passes and backends share."""

import dataclasses

import pytest
import torch

import recfx
from recfx.backends import BACKENDS
from recfx.frontend.capture import CapturedGraph
from recfx.passes import PASSES, PassContext, PassResult, Placement, register_pass


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def test_the_context_has_one_typed_field_per_shared_datum() -> None:
    fields = {f.name for f in dataclasses.fields(PassContext)}
    assert fields == {"example_inputs", "captured", "model", "backend", "backend_options", "quant", "calibration",
                      "fp8_state", "report_sections"}  # no string-keyed bag
    ctx = PassContext()
    assert ctx.dynamic_dims == {} and ctx.report_sections == {} and ctx.backend_options == {}
    assert PassContext().report_sections is not ctx.report_sections  # each context owns its dicts


def test_compile_fills_the_context_and_attaches_report_sections() -> None:
    seen: list[PassContext] = []

    @register_pass("test_context_probe", stage="canonicalize")
    class Probe:
        """Records its context and adds a report section."""

        def __init__(self, ctx: PassContext) -> None:
            self.ctx = ctx

        def __call__(self, gm: torch.fx.GraphModule) -> PassResult:
            seen.append(self.ctx)
            self.ctx.report_sections["probe"] = "probe section"
            return PassResult(gm, modified=False)

    model = Mlp().eval()
    try:
        config = recfx.CompileConfig(user_passes=(Placement("test_context_probe", after="cse"),))
        compiled = recfx.compile(model, (torch.randn(2, 8),), backend="eager", config=config)
    finally:
        PASSES.remove("test_context_probe")
    (ctx,) = seen
    assert isinstance(ctx.captured, CapturedGraph) and ctx.model is model and ctx.backend == "eager"
    assert ctx.backend_options == {} and ctx.quant is None and ctx.calibration is None
    assert ctx.dynamic_dims == ctx.captured.dynamic_dims and ctx.dynamic_dims  # the batch is dynamic
    assert torch.equal(ctx.example_inputs[0], ctx.captured.example_inputs[0])
    assert compiled.report.sections["probe"] == "probe section"


def test_backends_read_their_options_from_the_context() -> None:
    backend = BACKENDS.get("inductor")()
    ctx = PassContext(backend_options={"mode": "max-autotune"})
    assert backend.options(ctx, ("mode",)) == {"mode": "max-autotune"}
    with pytest.raises(ValueError, match=r"unknown inductor backend_options \['bogus'\]; allowed: \['mode'\]"):
        backend.options(PassContext(backend_options={"bogus": 1}), ("mode",))
