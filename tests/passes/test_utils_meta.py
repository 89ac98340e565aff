"""fill_meta / fake_mode_of: the graph's fake mode is found without reading every node (passes call it per rewrite)."""

from __future__ import annotations

import torch

from recfx.frontend.capture import export_program
from recfx.passes.utils import fake_mode_of, fill_meta


class _Untouchable(dict):
    """Node metadata that fails when read: a node past the first fake tensor must not be looked at."""

    def get(self, *args, **kwargs):
        raise AssertionError("fake_mode_of read a node after the first fake tensor")

    __getitem__ = get
    __contains__ = get


def _graph() -> torch.fx.GraphModule:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return export_program(model, (torch.randn(3, 4),)).module()


def test_fake_mode_is_the_graph_s_and_found_from_the_first_fake_tensor() -> None:
    from torch._guards import detect_fake_mode

    gm = _graph()
    vals = [n.meta["val"] for n in gm.graph.nodes if "val" in n.meta]
    want = detect_fake_mode(vals)
    assert want is not None and fake_mode_of(gm) is want
    nodes = list(gm.graph.nodes)
    first = next(i for i, n in enumerate(nodes) if isinstance(n.meta.get("val"), torch.Tensor))
    for node in nodes[first + 1:]:
        node.meta = _Untouchable(node.meta)
    assert fake_mode_of(gm) is want


def test_fill_meta_fills_a_new_node() -> None:
    gm = _graph()
    out = next(n for n in gm.graph.nodes if n.op == "output")
    last = out.args[0][0] if isinstance(out.args[0], (list, tuple)) else out.args[0]
    with gm.graph.inserting_before(out):
        new = gm.graph.call_function(torch.ops.aten.relu.default, (last,))
    assert fill_meta(gm, [new]) == 1
    assert tuple(new.meta["val"].shape) == (3, 2)


def test_attention_is_pure_without_dropout() -> None:
    """SDPA is tagged random for its dropout: with dropout_p=0 it is a pure function (CSE, DCE and regions may treat
    it as one), with dropout it is not."""
    import torch
    from torch import nn

    from recfx.passes.utils import is_impure

    class Attn(nn.Module):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=self.p)

    q = torch.randn(1, 2, 4, 8)
    for p, impure in ((0.0, False), (0.5, True)):
        gm = torch.export.export(Attn(p).train(p > 0), (q,)).module()
        sdpa = [n for n in gm.graph.nodes if n.op == "call_function" and "scaled_dot_product" in str(n.target)]
        assert sdpa and all(is_impure(n) is impure for n in sdpa), (p, [n.target for n in sdpa])
