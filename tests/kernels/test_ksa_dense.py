"""The dense summary prefix (``recfx/kernels/ksa_dense.py``) and the kernel that starts from it, vs float64.

Under ``TRITON_INTERPRET=1`` the dense call is ATen's CPU flash attention over the same strided views the GPU path
gives cuDNN, so the regrouping, the strides the kernel reads and the merge are all exercised. fp16 only (the
interpreter mis-computes bf16 ``tl.dot``; bf16 is checked on the GPU by ``bench/ksa.py``'s checks).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from recfx.kernels import ksa_dense
from recfx.kernels.ksa_prefill import ksa_prefill, reference
from recfx.kernels.ksa_reference import split_length
from recfx.models.ksa_mask import ksa_visibility

#: |out - ref| for fp16 outputs of magnitude ~1: the prefix's partial output is rounded to fp16 once more
#: before the merge, so the bound is the kernel's (3e-3) with that extra rounding
FP16_OUT_ATOL = 3e-3
#: log-sum-exp: the CPU attention's float32 exp/log on fp16 inputs (~3e-5 seen)
LSE_ATOL = 2e-4


def _check(batch: int, length: int, chunk: int, window: int, heads: int, groups: int, config: dict | None = None
           ) -> None:
    q = torch.randn(batch, length, heads, 16).half()
    k, v = (torch.randn(batch, length, heads // groups, 16).half() for _ in range(2))
    out, lse = ksa_prefill(q, k, v, chunk, 1, window, 0.25, prefix="dense", config=config)
    ref_out, ref_lse = reference(q.double(), k.double(), v.double(), chunk, 1, window, 0.25)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert (out.double() - ref_out).abs().max() < FP16_OUT_ATOL
    assert (lse.double() - ref_lse).abs().max() < LSE_ATOL


@pytest.mark.parametrize("window", [0, 1, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_dense_prefix_matches_reference(window: int, groups: int) -> None:
    """Batch 2, GQA, a trailing incomplete chunk (its rows walk the prefix in the kernel, masked)."""
    _check(batch=2, length=5 * 24 + 3, chunk=4, window=window, heads=4, groups=groups)


@pytest.mark.parametrize("config", [
    {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_LOOPS": False},  # square TMA tiles (diagonal tile)
    {"BLOCK_M": 16, "BLOCK_N": 32, "SPLIT_LOOPS": False},  # summary rows in their own loop
    {"BLOCK_M": 32, "BLOCK_N": 16, "SPLIT_LOOPS": True},  # no TMA: split pointer loops
])
def test_dense_prefix_every_loop_structure(config: dict) -> None:
    _check(batch=1, length=9 * 30, chunk=8, window=2, heads=2, groups=1, config=config)


def test_dense_prefix_views_are_the_summary_prefix() -> None:
    """Row (p, h, c') of the dense call is text token p of chunk c' + W + 1 over the summaries of chunks 0..c'."""
    chunk, window, length = 4, 2, 5 * 12
    q, k, v = (torch.randn(1, length, 2, 16).half() for _ in range(3))
    out, lse = ksa_dense.dense_prefix(q, k, v, chunk, window, 0.25)
    n_text, _ = split_length(length, chunk, 1)
    chunks = ksa_dense.dense_prefix_chunks(n_text, chunk, window)
    assert out.shape == (chunk, 2, chunks, 16) and lse.shape == (chunk, 2, chunks)
    block = chunk + 1
    for p, c_ in [(0, 0), (3, chunks - 1), (1, chunks // 2)]:
        pos = (c_ + window + 1) * block + p
        keys = torch.arange(c_ + 1) * block + chunk  # summary positions of chunks 0..c'
        visible = ksa_visibility(torch.tensor([pos])[:, None], keys[None, :], chunk, 1, window)
        assert visible.all()  # the spec's mask allows exactly these summaries to this text row
        scores = torch.einsum("hd,jhd->hj", q[0, pos].double(), k[0, keys].double()) * 0.25
        want = torch.einsum("hj,jhd->hd", torch.softmax(scores, -1), v[0, keys].double())
        assert (out[p, :, c_].double() - want).abs().max() < 3e-3
        assert (lse[p, :, c_].double() - torch.logsumexp(scores, -1)).abs().max() < LSE_ATOL


def test_dense_prefix_chunks() -> None:
    assert ksa_dense.dense_prefix_chunks(n_text=80, chunk_size=8, window=2) == 7  # chunks 3..9
    assert ksa_dense.dense_prefix_chunks(n_text=83, chunk_size=8, window=2) == 7  # trailing chunk left out
    assert ksa_dense.dense_prefix_chunks(n_text=24, chunk_size=8, window=2) == 0


def test_dense_prefix_supported_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    long = torch.randn(1, 9 * 4000, 2, 16).half()  # 3,871 prefix chunks at W = 128
    assert ksa_dense.dense_prefix_supported(long, 8, 1, 128)
    assert not ksa_dense.dense_prefix_supported(long[:, : 9 * 1000], 8, 1, 128)  # too few prefix chunks
    assert not ksa_dense.dense_prefix_supported(long, 8, 2, 128)  # S = 2: not one causal attention
    assert not ksa_dense.dense_prefix_supported(long.float(), 8, 1, 128)
    assert not ksa_dense.dense_prefix_supported(torch.randn(1, 9 * 4000, 2, 12).half(), 8, 1, 128)
    monkeypatch.setenv("RECFX_KSA_PREFIX", "kernel")
    assert not ksa_dense.dense_prefix_supported(long, 8, 1, 128)
    monkeypatch.setenv("RECFX_KSA_PREFIX", "dense")
    assert ksa_dense.dense_prefix_supported(long[:, : 9 * 200], 8, 1, 128)


def test_dense_prefix_refuses_what_it_cannot_run() -> None:
    q = torch.randn(1, 6 * 20, 2, 16).half()
    with pytest.raises(ValueError, match="prefix='dense' needs S = 1"):
        ksa_prefill(q, q, q, 4, 2, 1, 0.25, prefix="dense")
    with pytest.raises(ValueError, match="text past the window"):
        ksa_prefill(q[:, :10], q[:, :10], q[:, :10], 4, 1, 1, 0.25, prefix="dense")
    with pytest.raises(ValueError, match="prefix must be"):
        ksa_prefill(q, q, q, 4, 1, 1, 0.25, prefix="cudnn")


def test_dense_launches_autotune_only_the_band_shapes() -> None:
    """With the dense prefix the kernel walks ~1K keys per row: autotuning keeps the shapes measured fastest there."""
    import triton

    from recfx.kernels import ksa_prefill as kp

    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_LOOPS": split}, num_warps=w, num_stages=s)
               for bm, bn, w, s, split in [(64, 64, 4, 3, False), (64, 64, 4, 2, False), (128, 128, 8, 2, False),
                                           (128, 128, 8, 2, True)]]
    kept = kp._prune(configs, {"seq_bucket": 17}, DENSE=True)
    assert [(c.kwargs["BLOCK_M"], c.num_stages, c.kwargs["SPLIT_LOOPS"]) for c in kept] == [(64, 2, False),
                                                                                             (128, 2, False)]
    assert kp._prune(configs, {"seq_bucket": 17}, DENSE=False) == configs
    assert kp._prune(configs, {"seq_bucket": 10}, DENSE=False) == configs[:1]  # short sequences: first config only
