"""``recfx compile`` writes a bundle; ``recfx bench --bundle`` times the loaded bundle like any backend."""

import json

import torch

import recfx
from recfx.models import get_model
from recfx.tools.cli import main


def test_compile_writes_a_bundle_that_bench_times(tmp_path, capsys):
    out = tmp_path / "dlrm"
    assert main(["compile", "dlrm-small", "--backend", "eager", "--batch", "4", "--out", str(out)]) == 0
    assert "compiled dlrm-small on eager" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["meta"]["model"] == "dlrm-small" and manifest["backend"] == "eager"
    spec = get_model("dlrm-small")
    inputs = spec.example_inputs(3, seed=5)
    assert torch.equal(recfx.load(out)(*inputs), spec.build()(*inputs))

    result = tmp_path / "bench.json"
    code = main(["bench", "--bundle", str(out), "--batch", "2", "--iters", "3", "--warmup", "1", "--time-budget",
                 "0", "--no-pipelined", "--no-flops", "--quiet", "--json", str(result), "--min-cosine", "0.9999"])
    assert code == 0
    rows = json.loads(result.read_text())["rows"]
    assert [(r["backend"], r["status"], r["batch"]) for r in rows] == [("eager", "ok", 2)]
    assert rows[0]["accuracy"]["cosine"] > 0.9999


def test_compile_refuses_an_existing_folder_and_bad_options(tmp_path, capsys):
    assert main(["compile", "dlrm-small", "--backend", "eager", "--out", str(tmp_path)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["compile", "dlrm-small", "--backend", "eager", "--quant", "{}", "--out", str(tmp_path / "b")]) == 2
    assert "need an FP8 backend" in capsys.readouterr().err
    assert main(["bench", "--batch", "2"]) == 2
    assert "give --model (or --bundle" in capsys.readouterr().err
