import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recfx.passes.matmul_to_linear import matmul_to_linear


class Forms(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.wk = nn.Parameter(torch.randn(4, 5))  # stored [K, N]
        self.b = nn.Parameter(torch.randn(5))

    def forward(self, x):
        a = x @ self.w.t() + self.b  # matmul + bias
        b = self.b + x @ self.wk  # bias first, weight not transposed
        c = F.linear(x, self.w) + self.b  # linear without bias, then the add
        d = torch.matmul(x, self.w.t())  # no bias
        return a + b + c + d


def test_all_forms_become_linear(graph_of, count):
    gm = graph_of(Forms(), torch.randn(2, 3, 4))
    x = torch.randn(4, 3, 4)
    want = gm(x)
    res = matmul_to_linear(gm)
    assert res.changed_nodes == 4
    assert count(gm, "aten.linear.default") == 4
    assert count(gm, "aten.matmul.default") == 0
    torch.testing.assert_close(gm(x), want, rtol=1e-5, atol=1e-5)


class NotLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 4))
        self.b2 = nn.Parameter(torch.randn(3, 5))  # bias that varies along rows: not a linear bias

    def forward(self, x, k):
        scores = x @ k.transpose(-2, -1)  # activation x activation (3-D): not a linear
        return x @ self.w.t() + self.b2, scores


def test_inexact_forms_are_left_alone(graph_of, count):
    gm = graph_of(NotLinear(), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    res = matmul_to_linear(gm)
    # the biased matmul keeps its add (bias shape [3, 5] is not a per-output bias); its matmul alone becomes linear
    assert count(gm, "aten.add.Tensor") == 1
    assert count(gm, "aten.linear.default") == 1 and count(gm, "aten.matmul.default") == 1
    assert res.changed_nodes == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_keeps_module_provenance(graph_of, dtype):
    model = Forms().to(dtype)
    gm = graph_of(model, torch.randn(2, 3, 4, dtype=dtype))
    matmul_to_linear(gm)
    lin = [n for n in gm.graph.nodes if n.target is torch.ops.aten.linear.default]
    assert all("val" in n.meta and n.meta["val"].dtype == dtype for n in lin)
    assert all(n.meta.get("stack_trace") for n in lin)
