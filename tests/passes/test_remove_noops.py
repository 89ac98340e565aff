import torch
import torch.nn.functional as F
from torch import nn

from recfx.passes.remove_noops import remove_noops


class Noops(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        h = self.drop(torch.relu(x))
        h = h.clone().contiguous().view(h.shape)
        h = h[:, :].permute(0, 1) * 1 + 0
        h = h.to(torch.float32)
        return F.dropout(h, 0.5, training=False), x.clone()


def test_noops_are_removed_and_output_is_unchanged(graph_of, count):
    gm = graph_of(Noops(), torch.randn(3, 4))
    x = torch.randn(5, 4)
    want = gm(x)
    res = remove_noops(gm)
    assert res.modified
    hist = {n.target for n in res.graph_module.graph.nodes if n.op == "call_function"}
    names = {str(t) for t in hist}
    assert not any(k in name for name in names for k in ("dropout", "alias", "permute", "slice", "mul", "add"))
    assert count(res.graph_module, "aten.relu.default") == 1
    got = res.graph_module(x)
    torch.testing.assert_close(got, want)
    assert got[1] is not x  # a clone returned straight from an input keeps its copy


class NotNoops(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], 2, 2) * 2, x[:, 1:], x.permute(1, 0), x.to(torch.float64)


def test_real_ops_are_kept(graph_of, count):
    gm = graph_of(NotNoops(), torch.randn(3, 4))
    assert count(gm, "aten.slice.Tensor") == 2  # x[:, 1:] is a full slice of dim 0, then a real one of dim 1
    res = remove_noops(gm)
    assert res.changed_nodes == 1
    for op in ("aten.view.default", "aten.mul.Tensor", "aten.permute.default", "aten.to.dtype"):
        assert count(gm, op) == 1, op
    assert count(gm, "aten.slice.Tensor") == 1
