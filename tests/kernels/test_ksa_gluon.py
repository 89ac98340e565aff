"""Host side of the Gluon band kernel (``recfx/kernels/ksa_gluon.py``): when it runs, its tile settings, and how
``ksa_prefill`` hands it the dense prefix.

The kernel itself needs a Hopper GPU (Gluon does not run under the interpreter): it is checked against float64 by
``bench/probes/gluon_band.py`` and ``bench/ksa.py --parts checks`` on the H200, and its sm_90 build is checked on
the CPU by ``test_resources.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

pytest.importorskip("triton")

from recfx.kernels import ksa_dense, ksa_gluon, ksa_gluon_kernel
from recfx.kernels import ksa_prefill as prefill_mod
from recfx.kernels.ksa_reference import prefill_reference


def test_band_not_supported_off_gpu_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    q = torch.randn(1, 90, 4, 128, dtype=torch.bfloat16)
    assert not ksa_gluon.band_supported(q, q, q, 8, 1)  # a CPU tensor
    monkeypatch.setenv("RECFX_KSA_BAND", "triton")
    assert not ksa_gluon.band_supported(q, q, q, 8, 1)


def test_band_runs_by_default_only_on_validated_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a (pretended) Hopper GPU: the validated Triton release uses the kernel, another only when asked for, and a
    bad switch value is an error that names the choices."""
    if ksa_gluon.gluon is None:
        pytest.skip("this Triton has no Gluon")
    q = torch.randn(1, 9 * 16, 4, 128, dtype=torch.bfloat16)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(ksa_gluon.ksa_tma, "_capability", lambda index: (9, 0))
    monkeypatch.setattr(ksa_gluon.triton, "__version__", "3.6.0")
    assert ksa_gluon.band_supported(q, q, q, 8, 1)
    assert not ksa_gluon.band_supported(q, q, q, 8, 2)  # S = 2
    for cut in (1, 4):  # the last chunk without its summary, or incomplete (not in the TMA view of whole chunks)
        assert not ksa_gluon.band_supported(q[:, :-cut], q[:, :-cut], q[:, :-cut], 8, 1)
    kv3 = q[:, :, :3]  # 4 query heads over 3 kv heads: not a GQA grouping
    assert not ksa_gluon.band_supported(q, kv3, kv3, 8, 1)
    assert not ksa_gluon.band_supported(q, q, q.half(), 8, 1)  # v in another dtype
    assert not ksa_gluon.band_supported(q, q[:, :, :1].expand_as(q), q, 8, 1)  # a broadcast (zero-stride) kv head
    q16 = torch.randn(1, 17 * 8, 4, 128, dtype=torch.bfloat16)
    assert not ksa_gluon.band_supported(q16, q16, q16, 16, 1)  # k = 16: not validated on the GPU
    monkeypatch.setattr(ksa_gluon.triton, "__version__", "3.9.0")
    assert not ksa_gluon.band_supported(q, q, q, 8, 1)
    monkeypatch.setenv("RECFX_KSA_BAND", "gluon")
    assert ksa_gluon.band_supported(q, q, q, 8, 1)
    monkeypatch.setenv("RECFX_KSA_BAND", "fast")
    with pytest.raises(ValueError, match="auto, gluon or triton"):
        ksa_gluon.band_supported(q, q, q, 8, 1)


def test_config_default_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECFX_KSA_GLUON_CONFIG", raising=False)
    assert ksa_gluon._config() == ksa_gluon.DEFAULT_CONFIG
    monkeypatch.setenv("RECFX_KSA_GLUON_CONFIG", "64,3")
    assert ksa_gluon._config() == (64, 3, 2, True, False)  # the shared-memory summary needs bn = BLOCK_M
    monkeypatch.setenv("RECFX_KSA_GLUON_CONFIG", "128,3,1")
    assert ksa_gluon._config() == (128, 3, 1, True, True)
    monkeypatch.setenv("RECFX_KSA_GLUON_CONFIG", "128,2,2,0,0")
    assert ksa_gluon._config() == (128, 2, 2, False, False)
    for bad in ("128", "128,x", "1,2,3,4,5,6", "0,2", "96,2", "128,0", "128,2,2,2", "128,2,2,1,5", "128,2,2,1,1,0"):
        monkeypatch.setenv("RECFX_KSA_GLUON_CONFIG", bad)
        with pytest.raises(ValueError, match="RECFX_KSA_GLUON_CONFIG wants bn,stages"):
            ksa_gluon._config()


def test_text_descriptor_groups_whole_chunks() -> None:
    """The TMA view skips every chunk's summary row: [B, H, chunks, k, D] with the chunk stride (k + 1) rows."""
    if ksa_gluon.gluon is None:
        pytest.skip("this Triton has no Gluon")
    x = torch.zeros(2, 9 * 5, 4, 128, dtype=torch.bfloat16)  # 5 blocks of k = 8 text + 1 summary
    desc = ksa_gluon._text_descriptor(x, 8, 64)
    assert list(desc.shape) == [2, 4, 5, 8, 128]
    assert list(desc.strides) == [x.stride(0), x.stride(2), 9 * x.stride(1), x.stride(1), 1]
    assert list(desc.block_shape) == [1, 1, 8, 8, 128]


def test_summary_descriptor_addresses_the_summary_rows() -> None:
    """The summary view starts at row k and steps a chunk (k + 1 rows) at a time: [B, H, chunks, D]; a box holds the
    summary rows of one 128-row tile's chunks."""
    if ksa_gluon.gluon is None:
        pytest.skip("this Triton has no Gluon")
    x = torch.zeros(2, 9 * 5, 4, 128, dtype=torch.bfloat16)
    desc = ksa_gluon._summary_descriptor(x, 8, 128)
    assert desc.base.data_ptr() == x[:, 8].data_ptr()
    assert list(desc.shape) == [2, 4, 5, 128]
    assert list(desc.strides) == [x.stride(0), x.stride(2), 9 * x.stride(1), 1]
    assert list(desc.block_shape) == [1, 1, 16, 128]


def test_prefill_hands_each_batch_row_and_its_dense_prefix_to_the_band_kernel(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    """With the band kernel available, the dense path calls it once per batch row with that row's views and the
    prefix ``dense_prefix`` computed for them, and the Triton kernel not at all. The stand-in fills the rows from
    the float64 reference, so the assembled output is checked too."""
    batch, length, chunk, window, heads = 2, 9 * 12, 8, 2, 4
    q = torch.randn(batch, length, heads, 16).half()
    k, v = (torch.randn(batch, length, heads, 16).half() for _ in range(2))
    ref, ref_lse = prefill_reference(q.double(), k.double(), v.double(), chunk, 1, window, 0.25)
    calls: list[dict[str, Any]] = []

    def band(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, ob: torch.Tensor, lb: torch.Tensor,
             given: tuple[torch.Tensor, torch.Tensor], chunk_size: int, win: int, scale: float) -> None:
        row = len(calls)
        assert qb.data_ptr() == q[row].data_ptr() and qb.shape == (1, length, heads, 16)
        want = ksa_dense.dense_prefix(qb, kb, vb, chunk_size, win, scale)
        assert torch.equal(given[0], want[0]) and torch.equal(given[1], want[1])
        ob.copy_(ref[row:row + 1].to(ob.dtype))
        lb.copy_(ref_lse[row:row + 1].float())
        calls.append({"chunk": chunk_size, "window": win, "scale": scale})

    def no_triton(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the Triton kernel ran although the band kernel was available")

    monkeypatch.setattr(ksa_gluon, "band_supported", lambda *a: True)
    monkeypatch.setattr(ksa_gluon, "ksa_band", band)
    monkeypatch.setattr(prefill_mod._Launch, "__call__", no_triton)
    out, lse = prefill_mod.ksa_prefill(q, k, v, chunk, 1, window, 0.25, prefix="dense")
    assert calls == [{"chunk": chunk, "window": window, "scale": 0.25}] * batch
    assert (out.double() - ref).abs().max() < 1e-3 and (lse.double() - ref_lse).abs().max() < 1e-6


def test_dense_prefix_threshold_depends_on_the_band_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the Gluon band kernel the dense prefix starts at ``MIN_PREFIX_CHUNKS_GLUON`` prefix chunks, with the band
    in the Triton kernel at ``MIN_PREFIX_CHUNKS``: a 16K text (1,919 prefix chunks) goes dense only with the former.
    ``chooses_dense_prefix`` (the benchmark's row label) makes the same decision as the op."""
    chunks_16k = ksa_dense.dense_prefix_chunks(16384, 8, 128)
    assert ksa_dense.MIN_PREFIX_CHUNKS_GLUON <= chunks_16k < ksa_dense.MIN_PREFIX_CHUNKS
    chosen: list[int] = []

    def supported(q: torch.Tensor, chunk_size: int, summaries: int, window: int, min_chunks: int) -> bool:
        chosen.append(min_chunks)
        return chunks_16k >= min_chunks  # as if the text were 16K tokens long

    monkeypatch.setattr(ksa_dense, "dense_prefix_supported", supported)
    monkeypatch.setattr(prefill_mod, "tma_supported", lambda *a: True)
    q = torch.zeros(1, 9 * 4, 2, 16).half()
    for gluon_band, want in ((True, ksa_dense.MIN_PREFIX_CHUNKS_GLUON), (False, ksa_dense.MIN_PREFIX_CHUNKS)):
        monkeypatch.setattr(ksa_gluon, "band_supported", lambda *a, on=gluon_band: on)
        assert prefill_mod._plan(q, q, q, 8, 1, 1, None, None, None)[2:] == (gluon_band, gluon_band)
        assert chosen[-1] == want
        assert prefill_mod.chooses_dense_prefix(q, q, q, 8, 1, 1) == gluon_band and chosen[-1] == want


def test_band_settings_are_read_only_where_the_band_kernel_could_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``prefix="kernel"`` never uses the Gluon kernel, so its environment switches are not even read there (a typo
    in them cannot break that path); where the dense prefix may run they are, and a bad value is an error."""
    monkeypatch.setenv("RECFX_KSA_BAND", "bogus")
    monkeypatch.setattr(prefill_mod._Launch, "__call__", lambda *a: None)
    q = torch.zeros(1, 9 * 4, 2, 16).half()
    prefill_mod.ksa_prefill(q, q, q, 8, 1, 1, 0.25, prefix="kernel")
    with pytest.raises(ValueError, match="RECFX_KSA_BAND"):
        prefill_mod.ksa_prefill(q, q, q, 8, 1, 1, 0.25)


def test_explicit_triton_settings_keep_the_triton_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block config or tma=False asks for the Triton kernel (sweeps, A/B): the band kernel is not used."""
    q = torch.randn(1, 9 * 6, 2, 16).half()
    monkeypatch.setattr(ksa_gluon, "band_supported", lambda *a: True)
    monkeypatch.setattr(ksa_gluon, "ksa_band", lambda *a: pytest.fail("band kernel used"))
    ref, _ = prefill_reference(q.double(), q.double(), q.double(), 8, 1, 1, 0.25)
    for kwargs in ({"config": {"BLOCK_M": 16, "BLOCK_N": 16, "SPLIT_LOOPS": False, "num_warps": 1,
                               "num_stages": 1}}, {"tma": False}):
        out, _ = prefill_mod.ksa_prefill(q, q, q, 8, 1, 1, 0.25, prefix="dense", **kwargs)
        assert (out.double() - ref).abs().max() < 3e-3


def test_summary_packs_only_where_they_fit() -> None:
    """The shipped rings with k = 8 leave room for the summary packs; with k = 4 the packs are twice as large (with
    D = 128 they would not fit: a build that needs more than 227 KB fails at launch) and, not checked on the GPU in
    that form, the kernel keeps k = 4's summary queries on L2."""
    bn, stages, q_bufs = ksa_gluon.DEFAULT_CONFIG[:3]
    assert ksa_gluon._shared_bytes(bn, stages, q_bufs, True, 8, 128, 2) <= ksa_gluon.SHARED_LIMIT
    assert ksa_gluon._shared_bytes(bn, stages, q_bufs, True, 4, 128, 2) > ksa_gluon.SHARED_LIMIT
    assert ksa_gluon._shared_bytes(bn, stages, q_bufs, False, 4, 128, 2) <= ksa_gluon.SHARED_LIMIT
    assert 8 in ksa_gluon.SMEM_SUMMARY_CHUNKS and 4 not in ksa_gluon.SMEM_SUMMARY_CHUNKS  # as checked on the GPU


def test_launcher_grid_order_and_summary_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ksa_band`` launches one persistent CTA per SM (fewer if there are fewer row tiles), passes the row tiles'
    count and the short ones at the text's start (for the balanced order), and keeps the summary queries in shared
    memory only where that form was checked and fits: k = 8, not k = 4, not beside 3 stages of 128 keys."""
    if ksa_gluon.gluon is None:
        pytest.skip("this Triton has no Gluon")
    launches: list[tuple[tuple[int, ...], dict[str, Any]]] = []
    names = list(inspect.signature(ksa_gluon_kernel._band_kernel.fn).parameters)

    class Recorder:  # the kernel's arguments by name
        def __getitem__(self, grid: tuple[int, ...]) -> Any:
            return lambda *args, **kwargs: launches.append((grid, {**dict(zip(names, args)), **kwargs}))

    monkeypatch.setattr(ksa_gluon.kernel, "_band_kernel", Recorder())
    monkeypatch.setattr(ksa_gluon, "_sm_count", lambda index: 132)
    monkeypatch.delenv("RECFX_KSA_GLUON_CONFIG", raising=False)

    def launch(chunk: int, n_text: int, heads: int = 4) -> tuple[tuple[int, ...], dict[str, Any]]:
        length = n_text + n_text // chunk
        q, k, v = (torch.zeros(1, length, heads, 128, dtype=torch.bfloat16) for _ in range(3))
        prefix = torch.zeros(chunk, heads, 4, 128, dtype=torch.bfloat16), torch.zeros(chunk, heads, 4)
        ksa_gluon.ksa_band(q, k, v, torch.empty_like(q), torch.empty(1, heads, length), prefix, chunk, 128, 0.1)
        return launches[-1]

    grid, arg = launch(8, 2400)  # 19 row tiles per head, the first 1024 text rows (8 tiles) short
    assert grid == (76,) and (arg["n_row_tiles"], arg["n_short"], arg["n_tiles_total"]) == (19, 8, 76)
    # the rows go out by TMA: one consumer's 64 text rows (8 chunks of 8) of ``out``, in the Q buffer's layout
    o_desc = arg["o_desc"]
    assert o_desc.base.data_ptr() == arg["Out"].data_ptr() and list(o_desc.block_shape) == [1, 1, 8, 8, 128]
    assert o_desc.layout == arg["q_desc"].layout and list(o_desc.strides) == list(arg["q_desc"].strides)
    assert arg["SUMMARY_SMEM"] and arg["BALANCED"] and arg["BLOCK_N"] == 128
    grid, _ = launch(8, 40 * 128, heads=16)  # 640 row tiles: one CTA per SM
    assert grid == (132,)
    assert not launch(4, 2400)[1]["SUMMARY_SMEM"]
    monkeypatch.setenv("RECFX_KSA_GLUON_CONFIG", "128,3,1")
    assert not launch(8, 2400)[1]["SUMMARY_SMEM"]
