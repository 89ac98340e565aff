import torch
from torch import nn

from recfx.passes.dce import dead_code_elimination


class Dead(nn.Module):
    def forward(self, x):
        unused = torch.relu(x) * 3  # noqa: F841  (dead)
        return x + 1


def test_dce_removes_unused_pure_nodes_and_keeps_guards(graph_of, count):
    gm = graph_of(Dead(), torch.randn(3, 4))
    assert count(gm, "aten.relu.default") == 1
    res = dead_code_elimination(gm)
    assert res.modified and res.changed_nodes == 2
    assert count(res.graph_module, "aten.relu.default") == 0 and count(res.graph_module, "aten.mul.Tensor") == 0
    assert any(n.op == "call_module" for n in res.graph_module.graph.nodes)  # _guards_fn stays
    x = torch.randn(5, 4)
    torch.testing.assert_close(res.graph_module(x), x + 1)


def test_dce_is_idempotent(graph_of):
    gm = dead_code_elimination(graph_of(Dead(), torch.randn(3, 4))).graph_module
    assert not dead_code_elimination(gm).modified
