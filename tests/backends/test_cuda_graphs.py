"""BatchGraphs: per-shape CUDA graphs for small batches; everything else runs uncaptured and is counted."""

from __future__ import annotations

import pytest
import torch

from recfx.backends.cuda_graphs import BatchGraphs


def test_cpu_inputs_run_uncaptured_and_are_counted() -> None:
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x + 1

    runner = BatchGraphs(fn, batches=(1, 2))
    assert torch.equal(runner(torch.zeros(2, 3)), torch.ones(2, 3))
    runner(torch.zeros(5, 3))
    assert calls == [2, 5] and runner.graphs == {}
    assert runner.stats.uncaptured == {2: 1, 5: 1}
    assert "ran uncaptured" in runner.stats.render() and "batch 5: 1 calls" in runner.stats.render()


def test_bad_buckets_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        BatchGraphs(lambda x: x, batches=(0, 2))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_captured_replay_matches_and_outputs_survive_the_next_call() -> None:
    w = torch.randn(16, 16, device="cuda")
    runner = BatchGraphs(lambda x: (x @ w).relu(), batches=(2,))
    a, b = torch.randn(2, 16, device="cuda"), torch.randn(2, 16, device="cuda")
    ya = runner(a)
    yb = runner(b)
    assert torch.allclose(ya, (a @ w).relu()) and torch.allclose(yb, (b @ w).relu())  # ya not overwritten
    assert len(runner.graphs) == 1 and runner.stats.uncaptured == {}
    runner(torch.randn(3, 16, device="cuda"))
    assert runner.stats.uncaptured == {3: 1}


def test_buckets_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match=r"sequence of batch sizes such as \(1, 2, 4, 8\)"):
        BatchGraphs(lambda x: x, batches=4)  # type: ignore[arg-type]
