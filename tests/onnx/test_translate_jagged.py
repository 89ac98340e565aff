"""Ops of jagged recommender code on ONNX Runtime (searchsorted, bucketize, index_add, scatter_add, embedding_bag),
check ops out of the untranslatable listing, and register_translation keyed by packet or overload."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recfx.onnx import OnnxExportConfig, OnnxExportError, register_translation
from recfx.onnx import translate as translate_mod
from recfx.onnx.translate_jagged import bucketize, searchsorted


class Jagged(torch.nn.Module):
    """Every op under test, on a jagged batch: values (nnz,), offsets (B + 1,), dense (B, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(50, 8))
        self.bag = torch.nn.EmbeddingBag(50, 8, mode="sum")
        self.register_buffer("boundaries", torch.tensor([-1.0, -0.25, 0.0, 0.5, 1.5]))

    def forward(self, dense: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        positions = torch.arange(values.shape[0])
        rows = torch.searchsorted(offsets[1:], positions, right=True)  # (nnz,)
        left = torch.searchsorted(offsets, positions)  # side left, ties go to the first
        emb = F.embedding(values, self.table)  # (nnz, 8)
        summed = torch.zeros(dense.shape[0], 8).index_add(0, rows, emb)
        scattered = torch.zeros(dense.shape[0], 8).scatter_add(0, rows[:, None].expand(-1, 8), emb)
        bags = self.bag(values, offsets[:-1])  # (B, 8)
        buckets = torch.bucketize(dense, self.boundaries)  # (B, 4)
        right_buckets = torch.bucketize(dense, self.boundaries, right=True)
        return rows, left, summed, scattered, bags, buckets, right_buckets


def _jagged(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 5, (batch,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    dense = torch.randn(batch, 4, generator=g)
    dense[0, :2] = torch.tensor([0.0, 0.5])  # values equal to a boundary: left / right differ there
    return dense, torch.randint(0, 50, (int(offsets[-1]),), generator=g), offsets


DIMS = {"values": {0: "nnz"}, "offsets": {0: "batch+1"}}


def test_jagged_ops_on_onnx_runtime(tmp_path, export_module) -> None:  # type: ignore[no-untyped-def]
    """Exported once at batch 3, run at batches 2 and 5 with other lengths: every output equal to PyTorch's."""
    module = Jagged().eval()
    lint, runner, hist = export_module(module, _jagged(3, 0), tmp_path / "jagged.onnx", dynamic_dims=DIMS)
    assert runner is not None, hist
    for batch, seed in ((2, 1), (5, 2)):
        inputs = _jagged(batch, seed)
        got, want = runner(*inputs), module(*inputs)
        for g, w in zip(got, want):
            if w.dtype.is_floating_point:
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
            else:
                assert torch.equal(g, w)


@pytest.mark.parametrize("right", [False, True])
def test_decompositions_match_the_ops(right: bool) -> None:
    boundaries = torch.tensor([0.0, 1.0, 1.0, 2.5])
    values = torch.tensor([[-1.0, 0.0, 1.0], [1.5, 2.5, 9.0]])
    want = torch.searchsorted(boundaries, values, right=right)
    assert torch.equal(searchsorted(boundaries, values, right=right), want)
    assert torch.equal(searchsorted(boundaries, values, side="right" if right else "left"),
                       torch.searchsorted(boundaries, values, right=right))
    rows = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.5, 3.0]])  # one sorted row per row of values
    assert torch.equal(searchsorted(rows, values, right=right), torch.searchsorted(rows, values, right=right))
    assert torch.equal(bucketize(values, boundaries, right=right, out_int32=True),
                       torch.bucketize(values, boundaries, right=right, out_int32=True))


class Checked(torch.nn.Module):
    """A dtype cast (torch.export leaves an _assert_tensor_metadata check) and an op without an ONNX form."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.zeta(x.to(torch.float64), 2.0).float()


def test_checks_are_not_listed_as_untranslatable(tmp_path, export_module) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OnnxExportError) as info:
        export_module(Checked(), (torch.rand(2, 3) + 1,), tmp_path / "x.onnx")
    assert "zeta" in str(info.value) and "_assert_tensor_metadata" not in str(info.value)


def test_register_translation_accepts_packets_and_overloads(monkeypatch) -> None:
    lib = torch.library.Library("recfx_test_reg", "DEF")  # noqa: TOR901
    lib.define("twice(Tensor x) -> Tensor")
    lib.define("twice.scaled(Tensor x, float s) -> Tensor")
    monkeypatch.setattr(translate_mod, "TRANSLATIONS", translate_mod.Registry("ONNX translation"))
    monkeypatch.setattr(translate_mod, "_BUILTIN_LOADED", True)
    entry = register_translation(torch.ops.recfx_test_reg.twice, lambda x: x, kind="decompose")
    assert entry.op == "recfx_test_reg::twice"
    assert set(entry.overloads()) == {torch.ops.recfx_test_reg.twice.default, torch.ops.recfx_test_reg.twice.scaled}
    assert set(translate_mod.decomposition_table(False)) == set(entry.overloads())
    one = register_translation(torch.ops.recfx_test_reg.twice.scaled, lambda x, s: x, kind="decompose", as_ops=True)
    assert one.op == "recfx_test_reg::twice.scaled" and one.overloads() == [torch.ops.recfx_test_reg.twice.scaled]
    with pytest.raises(ValueError, match="namespace::name"):
        register_translation("twice", lambda x: x)
    del lib


def test_jagged_export_config_ksa_as_ops_unaffected() -> None:
    assert OnnxExportConfig().ksa_as_ops is False  # the built-in jagged decompositions need no option
