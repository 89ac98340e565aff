"""recfx/backends/tensorrt/onnx_path.py and the ``via`` option: options of the other path are refused rather than
ignored; ``PlanCall`` checks the plan's input order and returns outputs in the graph's structure (a plain callable
stands in for the plan runner: these tests do not run TensorRT)."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree

from recfx.backends.tensorrt.backend import check_via
from recfx.backends.tensorrt.onnx_path import PlanCall, plan_is_current
from recfx.frontend.capture import TensorSpec


@pytest.mark.parametrize(("options", "via"), [({}, "dynamo"), ({"via": "onnx", "cache_dir": "x"}, "onnx"),
                                              ({"require_full_graph": True}, "dynamo")])
def test_check_via_accepts(options: dict[str, object], via: str) -> None:
    assert check_via("trt", options) == via


@pytest.mark.parametrize(("options", "message"), [
    ({"via": "tensorrt"}, "via must be 'dynamo' or 'onnx'"),
    ({"cuda_graph_batches": (1,)}, r"\['cuda_graph_batches'\] apply only with via='onnx'"),
    ({"via": "onnx", "require_full_graph": True}, r"\['require_full_graph'\] apply only with via='dynamo'"),
])
def test_check_via_refuses_options_it_would_ignore(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_via("trt-fp8", options)


class _Runner:
    input_names = ["x", "y"]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return [inputs[0] + inputs[1], inputs[0] * 2]


SPECS = [TensorSpec("x", ("batch", 3), torch.float32), TensorSpec("y", ("batch", 3), torch.float32)]


def test_plan_call_restores_the_output_structure() -> None:
    _, spec = pytree.tree_flatten({"sum": 0, "double": (0,)})
    call = PlanCall(_Runner(), SPECS, spec)
    out = call(torch.ones(2, 3), torch.ones(2, 3))
    assert set(out) == {"sum", "double"} and torch.equal(out["double"][0], torch.full((2, 3), 2.0))
    plain = PlanCall(_Runner(), SPECS, None)(torch.ones(1, 3), torch.zeros(1, 3))
    assert isinstance(plain, tuple) and len(plain) == 2


def test_plan_call_refuses_a_plan_with_other_inputs() -> None:
    with pytest.raises(ValueError, match=r"the plan's inputs are \['x', 'y'\], the graph's \['y', 'x'\]"):
        PlanCall(_Runner(), SPECS[::-1], None)


def test_plan_is_current_only_with_its_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recfx.backends.tensorrt.build import write_plan

    plan = tmp_path / "m.plan"
    assert not plan_is_current(plan, "k" * 64)  # no plan
    write_plan(plan, b"bytes", [], "k" * 64)
    assert plan_is_current(plan, "k" * 64) and not plan_is_current(plan, "j" * 64)
    plan.write_bytes(b"other")
    assert not plan_is_current(plan, "k" * 64)  # bytes no longer match the manifest
