"""Calibration hashes and metadata reading."""

from __future__ import annotations

import onnx
import pytest
import torch

from recfx.onnx.metadata import build_metadata, calibration_hash, read_metadata, tensor_bytes


def test_calibration_hash_is_stable_and_sensitive() -> None:
    a = [(torch.ones(2, 3), torch.arange(4))]
    assert calibration_hash(a) == calibration_hash([(torch.ones(2, 3), torch.arange(4))])
    assert calibration_hash(a) != calibration_hash([(torch.ones(2, 3), torch.arange(4) + 1)])
    assert calibration_hash(a) != calibration_hash([(torch.ones(3, 2), torch.arange(4))])  # shape counts
    assert calibration_hash(None) == "none"
    assert calibration_hash(iter(a)) == "unhashed (iterator)"  # never consumes the caller's iterator


def test_zero_dim_and_strided_tensors_hash_by_value() -> None:
    scalar = [(torch.tensor(2.0), torch.tensor(7))]  # 0-d float and int tensors (a temperature, a step count)
    assert calibration_hash(scalar) != calibration_hash([(torch.tensor(3.0), torch.tensor(7))])
    assert tensor_bytes(torch.tensor(1.0)) == b"\x00\x00\x80\x3f"  # float32 1.0, little endian
    x = torch.arange(6.0).reshape(2, 3)
    assert tensor_bytes(x.t()) == tensor_bytes(x.t().contiguous())  # row-major order of the logical tensor


def test_metadata_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    meta = build_metadata(model="m", backend="eager", fp8=False, quant=None, calibration="none",
                          export_config={"opset": 21}, plugins=["KsaAttention"], inputs=["x"], outputs=["y"])
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.helper.set_model_props(model, {**meta, "other": "kept out"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_metadata(path) == meta and read_metadata(model)["recfx.plugins"] == '["KsaAttention"]'
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "nope.onnx")
