"""``OrtRunner``: I/O binding of torch tensors, pytree outputs, dtypes, session cache, bad input."""

from __future__ import annotations

import pytest
import torch

from recfx.onnx.session import OrtRunner, providers_for, session_for


class TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2 + ids.float(), (x.argmax(-1) + ids.sum(-1))


@pytest.fixture
def runner(tmp_path, export_module):  # type: ignore[no-untyped-def]
    _, runner, _ = export_module(TwoOutputs(), (torch.randn(2, 5), torch.arange(10).reshape(2, 5)),
                                 tmp_path / "two.onnx")
    return runner


def test_binds_torch_tensors_and_returns_the_pytree(runner) -> None:  # type: ignore[no-untyped-def]
    x, ids = torch.randn(3, 10)[:, ::2], torch.randint(0, 9, (3, 5))  # a non-contiguous input
    got, want = runner(x, ids), TwoOutputs()(x, ids)
    assert isinstance(got, tuple) and len(got) == 2
    assert torch.equal(got[0], want[0]) and got[1].dtype == torch.int64 and torch.equal(got[1], want[1])


def test_sessions_are_cached_per_file(runner) -> None:  # type: ignore[no-untyped-def]
    assert session_for(runner.path, ["CPUExecutionProvider"]) is session_for(runner.path, ["CPUExecutionProvider"])


def test_bad_inputs(runner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="expected 2 inputs"):
        runner(torch.randn(2, 5))
    with pytest.raises(TypeError, match="bfloat16"):
        runner(torch.randn(2, 5, dtype=torch.bfloat16), torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="has inputs"):
        OrtRunner(runner.path, ["a", "b"], ["c", "d"])
    with pytest.raises(ValueError, match="provider must be"):
        providers_for("tpu")
    if "CUDAExecutionProvider" not in providers_for("auto"):
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            providers_for("cuda")
