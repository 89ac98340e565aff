"""recfx/bench/runner.py: sweeps, the accuracy check, FLOPs, skipped and failed backends (eager on tiny models)."""

import dataclasses

import pytest

from recfx.bench import BenchConfig, run_bench
from recfx.models import get_model
from recfx.models.onerec import onerec_flops

FAST = {"warmup": 1, "iters": 3, "time_budget": None}


@pytest.fixture(scope="module")
def onerec_beams(onerec_micro):
    """A one-layer OneRec on eager, beams 4 and 8, batches 1 and 3: two compiles, four measured rows."""
    return run_bench(BenchConfig(onerec_micro, backends=("eager",), batches=(1, 3), beams=(4, 8), **FAST))


def test_beam_and_batch_sweep_gives_one_row_per_shape(onerec_beams):
    rows = onerec_beams.rows
    assert [(r.beam, r.batch) for r in rows] == [(4, 1), (4, 3), (8, 1), (8, 3)]
    assert all(r.status == "ok" and r.backend == "eager" for r in rows)
    assert all(r.latency_ms.n == 3 and r.latency_ms.p50 > 0 and r.throughput_rps > 0 for r in rows)
    assert rows[0].compile_s == rows[1].compile_s != rows[2].compile_s  # one compile per beam, shared by batches
    assert all(r.device_ms is None and r.peak_mem_mb is None and not r.cuda_graphs for r in rows)  # CPU


def test_accuracy_of_the_reference_backend_is_exact(onerec_beams):
    for row in onerec_beams.rows:
        assert row.accuracy.topk_overlap == 1.0 and row.accuracy.exact == 1.0
        assert row.accuracy.cosine == pytest.approx(1.0, abs=1e-6)


def test_tokens_and_flops(onerec_beams):
    base = get_model(onerec_beams.model).config
    for row in onerec_beams.rows:
        cfg = dataclasses.replace(base, beam=row.beam)
        assert row.tokens_per_s == pytest.approx(row.throughput_rps * row.beam * cfg.levels)
        # counted by torch's FlopCounterMode on the reference call vs the model's analytic count: within 10 %
        assert row.flops == pytest.approx(onerec_flops(cfg, row.batch), rel=0.10)
        assert row.tflops == pytest.approx(row.flops / (row.latency_ms.p50 / 1e3) / 1e12)


def test_seq_sweep_on_ksa():
    result = run_bench(BenchConfig("ksa-tiny", backends=("eager",), batches=(2,), seqs=(16, 32), **FAST))
    assert [(r.seq, r.batch, r.status) for r in result.rows] == [(16, 2, "ok"), (32, 2, "ok")]
    assert [r.tokens_per_s / r.throughput_rps for r in result.rows] == [16, 32]
    assert result.rows[1].flops > 1.9 * result.rows[0].flops  # longer sequences cost more


def test_skipped_and_failed_backends_are_reported_and_the_run_goes_on(fake_backends):
    result = run_bench(BenchConfig("dlrm-small", backends=("test-broken", "eager", "test-unavailable",
                                                           "test-fails-at-3"), batches=(2, 3), **FAST))
    by = {}
    for row in result.rows:
        by.setdefault(row.requested, []).append(row)
    assert [(r.status, r.batch) for r in by["test-broken"]] == [("failed", None)]
    assert "boom at compile" in by["test-broken"][0].reason
    assert [(r.status, r.batch) for r in by["eager"]] == [("ok", 2), ("ok", 3)]
    assert by["test-unavailable"][0].status == "skipped" and "flux capacitor" in by["test-unavailable"][0].reason
    assert [(r.status, r.batch) for r in by["test-fails-at-3"]] == [("ok", 2), ("failed", 3)]
    assert "no kernel for batch 3" in by["test-fails-at-3"][1].reason
    assert [r.requested for r in result.rows][:1] == ["test-broken"]  # requested order is kept
    assert len(result.failed) == 2


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seqs": (64,)}, "takes no sequence length"),
    ({"beams": (4,)}, "has no beam"),
    ({"cuda_graphs": "on"}, "CUDA graphs need --device cuda"),
    ({"model": "not-a-model"}, "unknown model"),
])
def test_bad_options_raise_before_running(kwargs, match):
    options = {"model": "dlrm-small", "backends": ("eager",), **FAST, **kwargs}
    with pytest.raises(ValueError, match=match):
        run_bench(BenchConfig(**options))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batches": (0,)}, "batch sizes"),
    ({"dtype": "int8"}, "dtype"),
    ({"cuda_graphs": "sometimes"}, "cuda_graphs"),
    ({"iters": 0}, "iters"),
    ({"quant": {"activation": "static_per_tensor"}}, "calibration"),
    ({"quant": {"bogus": 1}}, "bogus"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig("dlrm-small", **kwargs)


def test_a_row_says_how_inductors_cache_served_its_compile(tmp_path, monkeypatch):
    """compile_detail counts the compile's FX graph cache hits and misses: a cold compile misses, the same compile in
    a fresh cache state served from disk hits (what tells a warm compile that did not use the cache)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    config = BenchConfig("dlrm-small", backends=("inductor",), batches=(2,), iters=2, warmup=1, count_flops=False)
    first = run_bench(config).rows[0].compile_detail
    assert first["fxgraph_cache_miss"] >= 1 and first["fxgraph_cache_hit"] == 0
    import torch

    torch._dynamo.reset()  # in-memory state gone: the next compile reads Inductor's on-disk cache
    again = run_bench(config).rows[0].compile_detail
    assert again["fxgraph_cache_hit"] >= 1 and again["fxgraph_cache_miss"] == 0
