"""inline_autocast: autocast / grad-mode regions opened with autocast's casts written out, unsafe bodies kept."""

from __future__ import annotations

import torch
from torch import nn

from recfx.frontend import capture
from recfx.passes import CANONICAL_PASSES, PassManager
from recfx.passes.utils import op_histogram


class Autocast(nn.Module):
    def __init__(self, body: str = "linear") -> None:
        super().__init__()
        self.lin, self.out, self.body = nn.Linear(8, 8), nn.Linear(8, 4), body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.relu(self.lin(x))
            if self.body == "softmax":
                h = h.softmax(-1)  # autocast may run this in float32: the region must stay wrapped
        with torch.no_grad():
            h = self.out(h.float())
        return h


def _canonical(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    gm = capture(model.eval(), (x,)).graph_module
    return PassManager.from_names(CANONICAL_PASSES, check_invariants=True).run(gm)


def test_autocast_region_inlined_with_its_casts() -> None:
    torch.manual_seed(0)
    model, x = Autocast(), torch.randn(3, 8)
    gm = _canonical(model, x)
    hist = op_histogram(gm)
    assert not any("wrap_with" in k for k in hist), hist
    assert hist["aten.linear.default"] == 2
    inner = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.linear.default)
    assert inner.meta["val"].dtype == torch.bfloat16  # the cast autocast makes at run time is in the graph
    y = torch.randn(5, 8)
    torch.testing.assert_close(gm(y), model(y), rtol=0, atol=0)  # the same casts, the same bf16 GEMM


def test_autocast_region_with_other_ops_is_kept() -> None:
    model, x = Autocast("softmax"), torch.randn(3, 8)
    gm = _canonical(model, x)
    assert op_histogram(gm).get("wrap_with_autocast") == 1
    torch.testing.assert_close(gm(x), model(x))
