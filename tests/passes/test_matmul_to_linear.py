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


class GemmForms(nn.Module):
    """Weight GEMMs as recommender and research code writes them: addmm, mm, bmm against one weight, einsum."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))  # [N, K]
        self.b = nn.Parameter(torch.randn(6))
        self.wk = nn.Parameter(torch.randn(6, 6))  # [K, N]
        self.register_buffer("wbuf", torch.randn(6, 6))

    def forward(self, x):  # (B, T, 4)
        flat = x.reshape(-1, 4)  # (B*T, 4)
        h = torch.addmm(self.b, flat, self.w.t())  # (B*T, 6)
        h = torch.relu(torch.mm(h, self.wk))
        h = h.reshape(x.shape[0], x.shape[1], 6)  # (B, T, 6)
        h = torch.bmm(h, self.wbuf.unsqueeze(0).expand(x.shape[0], 6, 6))
        h = torch.einsum("btk,nk->btn", h, self.wk)
        return torch.einsum("...k,kn->...n", h, self.wbuf)


def test_addmm_mm_bmm_einsum_become_linear(graph_of, count):
    gm = graph_of(GemmForms(), torch.randn(2, 3, 4))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    want = GemmForms().double()
    want.load_state_dict({k: v.double() for k, v in gm.state_dict().items() if k in want.state_dict()})
    res = matmul_to_linear(gm)
    assert res.changed_nodes == 5
    assert count(gm, "aten.linear.default") == 5
    for op in ("addmm", "mm", "bmm", "einsum"):
        assert count(gm, f"aten.{op}.default") == 0, op
    torch.testing.assert_close(gm(x.float()).double(), want(x), rtol=1e-4, atol=1e-4)  # float32 vs float64


class NotGemmLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):  # (B, 4, 4)
        scaled = torch.addmm(self.w, x[0], self.w, beta=0.5)  # beta != 1: not a bias add
        left = torch.mm(self.w, x[1])  # weight on the left: a linear of w by x[1] (exact, but x[1] is no constant)
        per_row = torch.bmm(x, self.w.unsqueeze(0).expand(x.shape[0], 4, 4) * 2)  # not one shared weight
        batched = torch.einsum("bij,jk->bik", x, self.w) + torch.einsum("bij,ki->bkj", x, self.w)  # k not last
        return scaled + left + per_row.sum(0) + batched.sum(0)


def test_gemms_that_are_not_linears_are_left_alone(graph_of, count):
    gm = graph_of(NotGemmLinear(), torch.randn(3, 4, 4))
    x = torch.randn(3, 4, 4)
    want = gm(x)
    matmul_to_linear(gm)
    assert count(gm, "aten.addmm.default") == 1 and count(gm, "aten.mm.default") == 0
    assert count(gm, "aten.bmm.default") == 1 and count(gm, "aten.einsum.default") == 1
    assert count(gm, "aten.linear.default") == 2  # the mm, and "bij,jk->bik" (x @ w on the last dim)
    torch.testing.assert_close(gm(x), want, rtol=1e-5, atol=1e-5)
