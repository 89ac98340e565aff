"""recfx analyze: statistics per layer and per model, a PNG, JSON; the outlier-channel option; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recfx.analysis.distribution import add_outlier_channels, analyze_model
from recfx.analysis.stats import tensor_stats
from recfx.models import get_model
from recfx.tools.cli import main


def test_cli_writes_table_png_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, js = tmp_path / "dist.png", tmp_path / "dist.json"
    rc = main(["analyze", "dlrm-small", "ksa-tiny", "--batch", "2", "--batches", "1", "--out", str(png),
               "--json", str(js), "--layers", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per model" in out and "dlrm-small" in out and "ksa-tiny" in out and "act kurtosis (median)" in out
    data = json.loads(js.read_text())
    assert [d["name"] for d in data] == ["dlrm-small", "ksa-tiny"]
    assert data[0]["summary"]["linear layers"] == 5 and data[1]["summary"]["linear layers"] == 38


def test_layer_statistics_are_the_tensors_statistics() -> None:
    spec = get_model("dlrm-small")
    model = spec.build()
    result = analyze_model("dlrm", model, [spec.example_inputs(8)])
    first = result.layers[0]
    assert first.name == "bottom.0"
    assert first.weight == tensor_stats(model.bottom[0].weight)
    dense = spec.example_inputs(8)[0]  # bottom.0 reads the dense features directly
    assert first.activation.variance == pytest.approx(float(dense.double().var(unbiased=False)), rel=1e-9)
    assert first.activation.abs_max == pytest.approx(float(dense.abs().max()))
    assert 25 < first.weight_sqnr_db < 40 and 25 < first.activation_sqnr_db < 40


def test_outlier_channels_raise_activation_kurtosis() -> None:
    spec = get_model("ksa-tiny")
    batches = [spec.example_inputs(2)]
    plain = analyze_model("ksa", spec.build(), batches)
    model = spec.build()
    assert add_outlier_channels(model, 2, 30.0) > 0
    outliers = analyze_model("ksa+outliers", model, batches)
    q_plain = next(la for la in plain.layers if la.name == "layers.0.attn.q_proj").activation
    q_out = next(la for la in outliers.layers if la.name == "layers.0.attn.q_proj").activation
    assert q_plain.kurtosis < 5 and q_out.kurtosis > 20
    assert q_out.max_over_p99 > 3 * q_plain.max_over_p99


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "no-such-model", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["analyze", "dlrm-small", "--batch", "0"]) == 2
    assert main(["analyze", "dlrm-small", "--batch", "2", "--batches", "1",
                 "--out", str(tmp_path / "missing" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no nn.Linear"):
        analyze_model("relu", torch.nn.ReLU(), [(torch.randn(2),)])


def test_analyze_takes_a_trained_movielens_checkpoint(tmp_path: Path) -> None:
    from recfx.models.movielens import RankingConfig, TrainConfig, load_movielens, save_checkpoint, train_ranking

    data = load_movielens().head(20)
    model = train_ranking(data, RankingConfig(n_users=20, n_items=data.n_items, embed_dim=8, bottom_mlp=(16, 8),
                                              top_mlp=(16, 8)), TrainConfig(epochs=1, max_steps=2))
    save_checkpoint(tmp_path / "rank", model, data, {})
    js = tmp_path / "dist.json"
    assert main(["analyze", str(tmp_path / "rank"), "--batch", "2", "--out", str(tmp_path / "d.png"),
                 "--json", str(js)]) == 0
    (result,) = json.loads(js.read_text())
    assert result["name"] == "movielens-ranking" and result["summary"]["linear layers"] == 5
    first = result["layers"][0]
    assert first["name"] == "dlrm.bottom.0" and first["activation"]["count"] == 2 * 2 * data.n_items  # 2 users x items
