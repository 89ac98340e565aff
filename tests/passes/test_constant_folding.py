import torch
from torch import nn

from recfx.passes.constant_folding import constant_folding
from recfx.passes.dce import dead_code_elimination


class ConstChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        w = torch.tanh(self.w) * self.scale  # constant subgraph
        mask = torch.arange(4)[None, :] <= torch.arange(4)[:, None]  # static mask construction
        return (x @ w).masked_fill(~mask[:1], 0.0) + self.w.t().sum()


def test_constant_subgraphs_fold_to_buffers(graph_of, count):
    gm = graph_of(ConstChain(), torch.randn(3, 4), dynamic=False)
    x = torch.randn(3, 4)
    want = gm(x)
    res = constant_folding(gm)
    assert res.modified
    gm = dead_code_elimination(res.graph_module).graph_module
    for op in ("aten.tanh.default", "aten.arange.default", "aten.le.Tensor", "aten.bitwise_not.default",
               "aten.sum.default"):
        assert count(gm, op) == 0, op
    assert count(gm, "aten.matmul.default") == 1  # depends on the input: stays
    assert any(str(n.target).startswith("_folded_") for n in gm.graph.nodes if n.op == "get_attr")
    torch.testing.assert_close(gm(x), want)


class ViewOfParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return x @ self.w.t()


def test_views_of_parameters_are_not_copied(graph_of, count):
    gm = graph_of(ViewOfParam(), torch.randn(3, 4))
    assert not constant_folding(gm).modified
    assert count(gm, "aten.t.default") == 1


def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


def test_never_folds_through_recfx_ops(graph_of):
    lib = torch.library.Library("recfx_test_cf", "FRAGMENT")
    lib.define("double(Tensor x) -> Tensor")
    lib.impl("double", _double, "CompositeExplicitAutograd")

    class UsesOp(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4))

        def forward(self, x):
            return x + torch.ops.recfx_test_cf.double(self.w)

    from recfx.passes import constant_folding as cf

    gm = graph_of(UsesOp(), torch.randn(3, 4))
    old = cf.NEVER_FOLD_NAMESPACES
    cf.NEVER_FOLD_NAMESPACES = old | {"recfx_test_cf"}
    try:
        assert not constant_folding(gm).modified
    finally:
        cf.NEVER_FOLD_NAMESPACES = old
    assert constant_folding(gm).modified  # the same op outside the protected namespaces folds
