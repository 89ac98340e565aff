"""The captured IR keeps in-place ops: canonicalisation must not merge, fold or drop copies of written values."""

import torch
from torch import nn

from recfx.passes import CANONICAL_PASSES, PassManager
from recfx.passes.utils import mutated_values


class InPlace(nn.Module):
    def forward(self, x):
        mask = torch.zeros(4, 4, dtype=torch.bool)
        before = mask.sum()  # read before the write
        mask[0, 1] = True
        after = mask.sum()  # the same expression after the write
        other = mask.clone()
        other[:, 0] = True  # writes the copy only
        return x.masked_fill(mask, 0.0) + x.masked_fill(other, 1.0) + before + after


def test_canonical_pipeline_preserves_in_place_semantics(graph_of):
    model = InPlace().eval()
    gm = graph_of(model, torch.randn(2, 4, 4), dynamic=False)
    assert mutated_values(gm)
    out = PassManager.from_names(CANONICAL_PASSES, check_invariants=True).run(gm)
    x = torch.randn(2, 4, 4)
    torch.testing.assert_close(out(x), model(x))
    assert any(n.target is torch.ops.aten.clone.default for n in out.graph.nodes)  # the written copy stays
