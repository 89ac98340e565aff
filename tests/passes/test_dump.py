"""recfx/passes/dump.py: text dumps always; pictures only for graphs small enough to read (the rest: a warning)."""

import logging

import pytest
import torch

from recfx.passes.dump import dump_graph


class Chain(torch.nn.Module):
    """``n`` ops one after another: a graph ``n`` generations deep and one node wide."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n):
            x = x + i
        return x


class Fan(torch.nn.Module):
    """``n`` independent ops side by side: a graph ``n`` nodes wide and a few deep."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x * (i + 1) for i in range(self.n)], dim=1)


@pytest.mark.parametrize(("model", "drawn", "why"), [
    (Chain(10), True, ""),
    (Fan(10), True, ""),
    (Chain(150), False, "deep"),  # under the node cap, too deep
    (Fan(40), False, "wide"),
    (Chain(450), False, "453 nodes"),
])
def test_large_graphs_get_text_and_a_warning_instead_of_a_picture(graph_of, tmp_path, caplog, model, drawn, why):
    gm = graph_of(model, torch.randn(2, 3))
    caplog.clear()  # capture logs at debug level
    with caplog.at_level(logging.WARNING, logger="recfx.passes.dump"):
        paths = dump_graph(gm, tmp_path / "g", fmt="png")
    records = [r for r in caplog.records if r.name == "recfx.passes.dump"]
    assert paths[0].name == "g.txt" and paths[0].read_text()
    if drawn:
        assert [p.name for p in paths] == ["g.txt", "g.png"] and not records
    else:
        assert [p.name for p in paths] == ["g.txt"] and not (tmp_path / "g.png").exists()
        (record,) = records
        assert "too large to draw readably" in record.getMessage() and why in record.getMessage()
