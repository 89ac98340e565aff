import torch
from torch import nn

from recfx.passes.rewrite import Rewrite


class Act(nn.Module):
    def forward(self, x, y):
        return torch.sigmoid(x) * x + torch.sigmoid(y) * y * 2


def test_rewrite_replaces_checked_matches(graph_of, count):
    gm = graph_of(Act(), torch.randn(3, 4), torch.randn(3, 4))
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    want = gm(x, y)
    only_x = Rewrite("silu", lambda a: torch.sigmoid(a) * a, lambda a: torch.nn.functional.silu(a),
                     (torch.randn(2, 4),), check=lambda m: m.inputs["a"].name == "x")
    assert only_x.apply(gm) == 1
    assert count(gm, "aten.silu.default") == 1 and count(gm, "aten.sigmoid.default") == 1
    everything = Rewrite("silu", lambda a: torch.sigmoid(a) * a, lambda a: torch.nn.functional.silu(a),
                         (torch.randn(2, 4),))
    assert everything.apply(gm) == 1
    assert count(gm, "aten.sigmoid.default") == 0
    gm.recompile()
    torch.testing.assert_close(gm(x, y), want)
    assert all("val" in n.meta for n in gm.graph.nodes if n.op == "call_function")
