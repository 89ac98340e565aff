"""recfx/bench/results.py: the JSON schema (what every row holds), round trip, and rejection of bad files."""

import copy
import json
import math

import pytest

from recfx.bench import SCHEMA, BenchResult, load_result, validate_result
from recfx.bench.export import write_json
from recfx.bench.stats import Stats


def test_json_holds_the_documented_fields(dlrm_result):
    data = json.loads(dlrm_result.to_json())
    assert data["schema"] == SCHEMA and data["model"] == "dlrm-small"
    assert data["device"] == "cpu" and data["dtype"] == "fp32"
    assert data["config"]["batches"] == [1, 4] and data["config"]["backends"] == ["eager", "test-cannot-run"]
    assert data["environment"]["torch"] and "onnxruntime" in data["environment"]["versions"]
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    assert [r["batch"] for r in ok] == [1, 4]
    for row in ok:
        assert set(row["latency_ms"]) == {"n", "mean", "std", "p50", "p90", "p99", "min", "max"}
        assert row["latency_ms"]["n"] == 5
        assert set(row["accuracy"]) == {"cosine", "max_abs_err", "exact", "topk_overlap"}
        assert row["compile_s"] > 0 and set(row["compile_detail"]) == {
            "capture_s", "passes_s", "backend_s", "fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass"}
        assert row["compile_detail"]["fxgraph_cache_miss"] == 0  # eager: Inductor did not compile
        assert row["throughput_rps"] > 0 and row["flops"] > 0 and row["tflops"] > 0
        assert row["device_ms"] is None and row["cuda_graphs"] is False
    (skipped,) = [r for r in data["rows"] if r["status"] == "skipped"]
    assert skipped["backend"] == "test-cannot-run" and skipped["batch"] is None and skipped["reason"]
    validate_result(data)


def test_round_trip(dlrm_result, tmp_path):
    path = write_json(dlrm_result, tmp_path / "r.json")
    again = load_result(path)
    assert again.to_dict() == dlrm_result.to_dict()
    assert isinstance(again.rows[0].latency_ms, Stats)


def _broken(data, edit):
    data = copy.deepcopy(data)
    edit(data)
    return data


@pytest.mark.parametrize(("edit", "error", "match"), [
    (lambda d: d.update(schema="recfx.bench/0"), ValueError, "schema"),
    (lambda d: d.pop("rows"), TypeError, "'rows'"),
    (lambda d: d["rows"][0].pop("status"), ValueError, r"rows\[0\].status: missing"),
    (lambda d: d["rows"][0].update(status="great"), ValueError, "status"),
    (lambda d: d["rows"][0].update(batch="1"), TypeError, r"rows\[0\].batch"),
    (lambda d: d["rows"][0].update(cuda_graphs=1), TypeError, "cuda_graphs"),
    (lambda d: d["rows"][0].update(batch=True), TypeError, "batch"),
    (lambda d: d["rows"][0]["latency_ms"].pop("p99"), TypeError, "latency_ms.p99"),
    (lambda d: d["rows"][0].update(latency_ms=None), ValueError, "needs latency_ms"),
    (lambda d: d["rows"][0].update(speed="fast"), ValueError, "unknown fields"),
    # timings are finite and >= 0
    (lambda d: d["rows"][0]["latency_ms"].update(p50=float("nan")), ValueError, r"latency_ms.p50: must be a finite"),
    (lambda d: d["rows"][0]["latency_ms"].update(p99=float("inf")), ValueError, "latency_ms.p99"),
    (lambda d: d["rows"][0]["latency_ms"].update(mean=-1.0), ValueError, "latency_ms.mean"),
    (lambda d: d["rows"][0].update(throughput_rps=float("-inf")), ValueError, "throughput_rps"),
    (lambda d: d["rows"][0].update(compile_s=-0.5), ValueError, "compile_s"),
    (lambda d: d["rows"][0]["compile_detail"].update(passes_s=float("nan")), ValueError, "compile_detail.passes_s"),
    (lambda d: d["rows"][0].update(batch=0), ValueError, r"rows\[0\].batch: must be >= 1"),
    # unknown fields are refused at every level, the same way
    (lambda d: d.update(speed="fast"), ValueError, r"bench result: unknown fields \['speed'\]"),
    (lambda d: d["rows"][0]["latency_ms"].update(speed=1), ValueError, r"latency_ms: unknown fields \['speed'\]"),
    (lambda d: d["rows"][0]["accuracy"].update(speed=1), ValueError, r"accuracy: unknown fields \['speed'\]"),
    (lambda d: d["rows"][0]["compile_detail"].update(speed=1), ValueError, r"compile_detail: unknown fields"),
    (lambda d: d["rows"][0]["accuracy"].update(cosine="high"), TypeError, "accuracy.cosine"),
])
def test_bad_results_are_rejected_with_the_place(dlrm_result, edit, error, match):
    data = _broken(dlrm_result.to_dict(), edit)
    with pytest.raises(error, match=match):
        BenchResult.from_dict(data)


def test_load_result_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_result(bad)
    with pytest.raises(FileNotFoundError):
        load_result(tmp_path / "missing.json")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_result(deep)


def test_a_nan_accuracy_is_a_measurement_and_loads(dlrm_result, tmp_path):
    """Timings must be finite; an accuracy may be NaN (a backend that returned NaN) and still round-trips."""
    data = dlrm_result.to_dict()
    data["rows"][0]["accuracy"]["cosine"] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(data))
    assert math.isnan(load_result(tmp_path / "nan.json").rows[0].accuracy.cosine)
