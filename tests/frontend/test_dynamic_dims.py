"""Dynamic dims per input: the batch decided from the example inputs, derived dims, failures naming input and dim."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

import recfx
from recfx.errors import CaptureError
from recfx.frontend import capture


class Pooled(torch.nn.Module):
    """dense (B, 4); values (nnz,) jagged ids; offsets (B + 1,); lengths (8 * B,) per (table, row)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(30, 4))

    def forward(self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        rows = torch.searchsorted(offsets[1:], torch.arange(values.shape[0]), right=True)
        pooled = torch.zeros_like(dense).index_add(0, rows, self.table[values])
        per_row = lengths.reshape(8, dense.shape[0]).sum(0, keepdim=True).T.to(dense.dtype)  # (B, 1)
        return dense + pooled / (offsets[1:] - offsets[:-1])[:, None].clamp(min=1) + per_row


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 4, (batch,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    values = torch.randint(0, 30, (int(offsets[-1]),), generator=g)
    return torch.randn(batch, 4, generator=g), values, offsets, torch.randint(0, 3, (8 * batch,), generator=g)


def test_dynamic_batch_marks_only_batch_major_inputs() -> None:
    """dim 0 of dense is the batch (the most common dim-0 size); values / offsets / lengths are not marked."""
    g = capture(Pooled().eval(), _inputs(3), dynamic_batch=True,
                dynamic_dims={"values": {0: "nnz"}, "offsets": {0: "batch+1"}, "lengths": {0: "8*batch"}})
    assert g.dynamic_dims == {"dense": {0: "batch"}, "values": {0: "nnz"}, "offsets": {0: "batch + 1"},
                              "lengths": {0: "8*batch"}}


def test_derived_dims_compile_and_run_at_other_batches() -> None:
    model = Pooled().eval()
    config = recfx.CompileConfig(dynamic_dims={"values": {0: "nnz"}, "offsets": {0: "batch+1"},
                                               "lengths": {0: "8*batch"}})
    fast = recfx.compile(model, _inputs(3), backend="eager", config=config)
    for batch in (2, 5):
        inputs = _inputs(batch, seed=batch)
        torch.testing.assert_close(fast(*inputs), model(*inputs))


def test_torch_export_dim_expressions_are_accepted() -> None:
    batch = Dim("batch")
    g = capture(Pooled().eval(), _inputs(3),
                dynamic_dims={"values": {0: Dim("nnz")}, "offsets": {0: batch + 1}, "lengths": {0: 8 * batch},
                              "dense": {0: batch}})
    assert g.dynamic_dims["lengths"] == {0: "8*batch"} and g.dynamic_dims["offsets"] == {0: "batch + 1"}


def test_derived_dim_that_does_not_fit_the_example_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"input 'lengths' dim 0 is declared '4\*batch', which is 12 .* is 24"):
        capture(Pooled().eval(), _inputs(3), dynamic_dims={"lengths": {0: "4*batch"}})
    with pytest.raises(ValueError, match="neither a name nor a derived dim"):
        capture(Pooled().eval(), _inputs(3), dynamic_dims={"lengths": {0: "batch**2"}})


def test_capture_failure_names_the_input_and_dim() -> None:
    """offsets marked as an independent dim while the model needs offsets = batch + 1: the error says which."""
    with pytest.raises(CaptureError, match=r"dynamic dims involved: .*input 'offsets' dim 0 \(free\)"):
        capture(Pooled().eval(), _inputs(3), dynamic_dims={"values": {0: "nnz"}, "offsets": {0: "free"}})
