import pytest
import torch
from torch import nn

from recfx.passes.graph_view import dominates, dominators, isolate, post_dominators, to_networkx, users


class Diamond(nn.Module):
    def forward(self, x):
        a = torch.relu(x)
        b = torch.sigmoid(a)
        c = torch.tanh(a)
        return b + c


@pytest.fixture
def gm(graph_of):
    return graph_of(Diamond(), torch.randn(3, 4))


def test_networkx_view_mirrors_the_graph(gm):
    g = to_networkx(gm)
    assert set(g.nodes) == {n.name for n in gm.graph.nodes}
    assert g.nodes["relu"]["target"] == "aten.relu.default"
    assert g.nodes["relu"]["shape"] == ("s77", "4") or len(g.nodes["relu"]["shape"]) == 2
    assert g.has_edge("x", "relu") and g.has_edge("relu", "sigmoid")
    assert users(gm, "relu") == ["sigmoid", "tanh"]


def test_dominance(gm):
    idom = dominators(gm)
    assert idom["add"] == "relu"  # every path to the add passes through relu
    assert dominates(idom, "relu", "tanh") and not dominates(idom, "sigmoid", "add")
    ipdom = post_dominators(gm)
    assert ipdom["sigmoid"] == "add" and ipdom["tanh"] == "add"


def test_isolate_subgraph(gm):
    sub = isolate(gm, ["sigmoid", "tanh", "add"])
    assert sub.inputs == ("relu",) and sub.outputs == ("add",) and sub.is_single_output
    with pytest.raises(ValueError, match="not in the graph"):
        isolate(gm, ["nope"])
