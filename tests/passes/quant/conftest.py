"""A toy transformer-ish model with every kind of linear the FP8 policy knows, and helpers to run the passes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import recfx  # noqa: F401
from recfx.frontend import capture
from recfx.passes import CANONICAL_PASSES, PASSES, PassContext, PassManager
from recfx.passes.invariants import check_all
from recfx.passes.quant import FP8_PASSES

ops = torch.ops.recfx


class ToyAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, T, d)
        return self.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class ToyMoE(nn.Module):
    def __init__(self, d: int, experts: int = 2) -> None:
        super().__init__()
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(nn.Linear(d, d) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.router(x), dim=-1)  # (B, T, E)
        return sum(w[..., i : i + 1] * torch.relu(e(x)) for i, e in enumerate(self.experts))


class Toy(nn.Module):
    """input projection -> attention -> MoE -> head: 9 linears, 6 quantized by default."""

    def __init__(self, d_in: int = 16, d: int = 64, out: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.attn = ToyAttention(d)
        self.ffn = ToyMoE(d)
        self.head = nn.Linear(d, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.attn(F.layer_norm(h, h.shape[-1:]))
        h = h + self.ffn(F.layer_norm(h, h.shape[-1:]))
        return self.head(h)


DEFAULT_QUANTIZED = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "ffn.experts.0", "ffn.experts.1"]


@pytest.fixture
def toy() -> tuple[Toy, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return Toy().eval(), (torch.randn(2, 8, 16),)


class Helpers:
    """What the quant tests share (fixtures cannot be imported as a module under --import-mode=importlib)."""

    Toy = Toy
    DEFAULT_QUANTIZED = DEFAULT_QUANTIZED

    @staticmethod
    def run(model: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], quant: Any = None,
            calibration: Any = None) -> tuple[Any, PassContext]:
        """Capture, canonicalise, then run the named FP8 passes; returns (gm, ctx).

        The whole FP8 pipeline runs with every invariant check; a partial one (which ends the quantize stage early,
        observers still in) checks lint, the canonical invariants and the last pass's postcondition.
        """
        captured = capture(model, inputs)
        ctx = PassContext(example_inputs=captured.example_inputs, captured=captured, model=model, quant=quant,
                          calibration=calibration)
        full = tuple(names) == FP8_PASSES
        manager = PassManager.from_names(list(CANONICAL_PASSES) + names, ctx, check_invariants=full)
        gm = manager.run(captured.graph_module)
        if not full:
            post = PASSES.get(names[-1]).postcondition if names else None
            problems = check_all(gm, ["canonicalize"]) + (post(gm) if post else [])
            assert not problems, problems
        return gm, ctx

    @staticmethod
    def count(gm: Any, target: Callable[..., Any]) -> int:
        return sum(1 for n in gm.graph.nodes if n.target is target)

    @staticmethod
    def nodes(gm: Any, target: Callable[..., Any]) -> list[Any]:
        return [n for n in gm.graph.nodes if n.target is target]


@pytest.fixture
def fp8() -> type[Helpers]:
    return Helpers
