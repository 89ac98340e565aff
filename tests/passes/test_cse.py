import torch
from torch import nn

from recfx.passes.cse import common_subexpression_elimination


class Repeated(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        a = torch.sigmoid(x @ self.w)
        b = torch.sigmoid(x @ self.w)  # same computation again
        c = torch.sigmoid(x @ self.w.t())  # different
        return a + b + c


def test_cse_merges_identical_nodes_only(graph_of, count):
    gm = graph_of(Repeated(), torch.randn(3, 4))
    assert count(gm, "aten.sigmoid.default") == 3
    x = torch.randn(2, 4)
    want = gm(x)
    res = common_subexpression_elimination(gm)
    assert res.modified
    assert count(res.graph_module, "aten.sigmoid.default") == 2
    assert count(res.graph_module, "aten.matmul.default") == 2
    torch.testing.assert_close(res.graph_module(x), want)


class Random(nn.Module):
    def forward(self, x):
        return torch.rand_like(x) + torch.rand_like(x)


def test_cse_never_merges_random_ops(graph_of, count):
    gm = graph_of(Random(), torch.randn(3, 4))
    common_subexpression_elimination(gm)
    assert count(gm, "aten.rand_like.default") == 2
