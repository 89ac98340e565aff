"""The ort backend's cache key reads every constant, 0-d float ones included (transformers' eager attention folds
its scaling into one)."""

from __future__ import annotations

import torch

import recfx


class ScalarBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.125))  # a 0-d float constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * self.scale


def test_zero_dim_float_constant_compiles_on_ort() -> None:
    model = ScalarBuffer().eval()
    fast = recfx.compile(model, (torch.randn(2, 4),), backend="ort")
    x = torch.randn(3, 4)
    torch.testing.assert_close(fast(x), model(x))
