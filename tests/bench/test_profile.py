"""recfx bench --profile: kernel classes from names, the Markdown table, and the row field's JSON round trip."""

from __future__ import annotations

import pytest

from recfx.bench import BenchConfig, run_bench
from recfx.bench.export import to_csv
from recfx.bench.profile import CLASSES, classify, gemm_dims, profile_markdown
from recfx.bench.results import BenchResult, BenchRow
from recfx.bench.stats import summarize


@pytest.mark.parametrize("name,want", [
    ("nvjet_sm90_qqtst_128x128_128x6_1x2_h_bz_ovscale_TNT", "gemm (cuBLAS)"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7", "attention"),
    ("triton_per_fused__scaled_mm__to_copy_abs_amax_clamp_div_mul_silu_48", "fused producer + quantization (triton)"),
    ("triton_red_fused__unsafe_view_add_mean_mul_pow_rsqrt_view_34", "other fused (triton)"),
    ("triton_per_fused_amax_exp_log_sub_sum_3", "other fused (triton)"),  # a logsumexp: an amax, no FP8 cast
    ("void at::native::sbtopk::gatherTopK<float>", "top-k"),
    ("void at::native::vectorized_elementwise_kernel<4>", "other"),
])
def test_classify(name: str, want: str) -> None:
    assert classify(name) == want and want in CLASSES


def _result(profile: dict | None) -> BenchResult:
    row = BenchRow("cuda-fp8", "cuda-fp8", "ok", batch=32, latency_ms=summarize([1.0, 2.0]), profile=profile)
    return BenchResult("onerec-tiny", "cuda", "bf16", {}, {}, [row], "2026-12-06T00:00:00Z", "0")


def test_profile_round_trips_and_renders() -> None:
    profile = {"total_ms": 3.0, "classes": {"gemm (cuBLAS)": 2.0, "attention": 1.0}, "gemm_shapes": [],
               "top_kernels": [{"name": "nvjet", "ms": 2.0}]}
    result = _result(profile)
    back = BenchResult.from_dict(result.to_dict())
    assert back.rows[0].profile == profile
    table = profile_markdown(back.rows)
    assert "| cuda-fp8 | 32 | 2.0 | 1.0 | 3.0 |" in table
    assert "profile" not in to_csv(result).splitlines()[0]  # the CSV stays one flat line of numbers per row
    assert profile_markdown(_result(None).rows) == ""


def test_a_profile_that_is_not_an_object_is_refused() -> None:
    data = _result(None).to_dict()
    data["rows"][0]["profile"] = [1, 2]
    with pytest.raises(TypeError, match="profile"):
        BenchResult.from_dict(data)


@pytest.mark.parametrize("op,shapes,want", [
    ("aten::mm", [[32, 2048], [2048, 5632]], (32, 2048, 5632)),
    ("aten::_scaled_mm", [[32, 2048], [2048, 5632], [32, 1], [1, 5632]], (32, 2048, 5632)),
    ("aten::addmm", [[5632], [32, 2048], [2048, 5632]], (32, 2048, 5632)),  # (bias, a, b)
    ("aten::_grouped_mm", [[4096, 1536], [53, 1536, 1152], [53]], (4096, 1536, 1152)),
    ("aten::_scaled_grouped_mm", [[4096, 1536], [53, 1536, 1152], [4096], [53, 1152], [53]], (4096, 1536, 1152)),
    ("aten::bmm", [[4, 32, 64], [4, 64, 16]], None),
    ("aten::mm", [], None),
])
def test_gemm_dims(op: str, shapes: list, want: tuple | None) -> None:
    assert gemm_dims(op, shapes) == want


def test_profile_off_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="GPU"):
        run_bench(BenchConfig("dlrm-small", backends=("eager",), batches=(2,), device="cpu", profile=True))


def test_the_largest_uncaptured_batch_is_profiled_and_a_failure_leaves_the_rows(monkeypatch) -> None:
    from types import SimpleNamespace

    from recfx.bench import profile as profile_mod
    from recfx.bench import runner

    rows = [BenchRow("inductor", "inductor", "ok", batch=b, cuda_graphs=g, latency_ms=summarize([1.0]))
            for b, g in ((8, False), (32, False), (32, True))]
    rows.append(BenchRow("inductor", "inductor", "failed", batch=64))
    asked = []
    workload = SimpleNamespace(inputs=lambda batch: asked.append(batch) or (batch,))
    monkeypatch.setattr(profile_mod, "profile_call", lambda call: {"ran": call()})
    runner._profile_largest(rows, lambda b: f"called at {b}", workload)  # type: ignore[arg-type]
    assert asked == [32] and rows[1].profile == {"ran": "called at 32"}
    assert rows[0].profile is None and rows[2].profile is None

    def broken(call):  # type: ignore[no-untyped-def]
        raise RuntimeError("no CUPTI")

    monkeypatch.setattr(profile_mod, "profile_call", broken)
    rows[1].profile = None
    runner._profile_largest(rows, lambda b: b, workload)  # type: ignore[arg-type]
    assert rows[1].profile is None and rows[1].status == "ok"
