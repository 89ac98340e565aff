"""recfx.serving.repository.export_triton: config.pbtxt checked with Triton's own ModelConfig message, and the
Python-backend form served for real by the stock tritonserver binary that PyTriton ships."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from recfx.serving.health import free_ports, wait_until_ready
from tests.serving.support import require_serve

require_serve()

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

import recfx  # noqa: E402
from recfx.models import get_model  # noqa: E402
from recfx.serving import ModelServing  # noqa: E402
from recfx.serving.repository import export_triton  # noqa: E402


@pytest.fixture(scope="module")
def dlrm() -> dict[str, recfx.CompiledModule]:
    spec = get_model("dlrm-small")
    model = spec.build()
    return {be: recfx.compile(model, spec.example_inputs(2), backend=be) for be in ("eager", "ort")}


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_layout_and_config(dlrm: dict[str, recfx.CompiledModule], tmp_path: Path) -> None:
    serving = ModelServing(max_batch=16, queue_delay_us=500, instances=3)
    repo = export_triton({"dlrm-py": dlrm["eager"], "dlrm-onnx": dlrm["ort"]}, tmp_path / "repo", serving)
    py, ox = _config(repo / "dlrm-py" / "config.pbtxt"), _config(repo / "dlrm-onnx" / "config.pbtxt")
    assert py.backend == "python" and ox.backend == "onnxruntime"
    assert (repo / "dlrm-py" / "1" / "model.py").is_file()
    assert (repo / "dlrm-py" / "1" / "bundle" / "manifest.json").is_file()
    assert (repo / "dlrm-onnx" / "1" / ox.default_model_filename).is_file()
    for cfg, name in ((py, "dlrm-py"), (ox, "dlrm-onnx")):
        assert cfg.name == name and cfg.max_batch_size == 16
        assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
            ("dense", "TYPE_FP32", [13]), ("sparse", "TYPE_INT64", [8])]
        assert [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
            ("output_0", "TYPE_FP32", [1])]
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [
            (3, "KIND_CPU")]
    # without dynamic batching the message has no dynamic_batching field at all
    repo2 = export_triton({"d": dlrm["eager"]}, tmp_path / "repo2", ModelServing(dynamic_batching=False))
    assert not _config(repo2 / "d" / "config.pbtxt").HasField("dynamic_batching")


def test_existing_folder_is_refused_and_kept(dlrm: dict[str, recfx.CompiledModule], tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_triton({"d": dlrm["eager"]}, tmp_path / "repo")
    assert (tmp_path / "repo" / "keep").read_text() == "x"
    with pytest.raises(ValueError, match="model name"):
        export_triton({"bad name": dlrm["eager"]}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def _stock_tritonserver(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The tritonserver binary of the PyTriton wheel with a backend folder holding the Python backend and the stub
    for this interpreter (PyTriton assembles the same at startup), and the environment the stub needs."""
    import pytriton

    root = Path(pytriton.__file__).parent / "tritonserver"
    backends = tmp / "backends"
    shutil.copytree(root / "backends", backends)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(root / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{sysconfig.get_config_var('LIBDIR')}:{libs}"
    env["PYTHONPATH"] = str(Path(recfx.__file__).parent.parent)
    # the embedded interpreter takes its prefix (the venv's site-packages) from the python3 it finds on PATH
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return [str(root / "bin" / "tritonserver"), f"--backend-directory={backends}"], env


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_python_backend_repository_served_by_stock_tritonserver(dlrm: dict[str, recfx.CompiledModule],
                                                                tmp_path: Path) -> None:
    module = dlrm["eager"]
    repo = export_triton({"dlrm": module}, tmp_path / "repo", ModelServing(max_batch=8, queue_delay_us=1000))
    cmd, env = _stock_tritonserver(tmp_path)
    http, grpc, metrics = free_ports(3)
    log = open(tmp_path / "triton.log", "w")  # noqa: SIM115 -- closed in the finally below, after the server
    proc = subprocess.Popen([*cmd, f"--model-repository={repo}", "--http-address=127.0.0.1", f"--http-port={http}",
                             "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--metrics-address=127.0.0.1",
                             f"--metrics-port={metrics}", "--allow-gpu-metrics=false", "--exit-timeout-secs=10"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"
    try:
        wait_until_ready(f"{base}/v2/health/ready", timeout_s=120, what="tritonserver",
                         alive=lambda: None if proc.poll() is None else (tmp_path / "triton.log").read_text()[-3000:])
        spec = get_model("dlrm-small")
        for b in (1, 3, 8):
            dense, sparse = spec.example_inputs(b, seed=b)
            status, body = _post(f"{base}/v2/models/dlrm/infer", {"inputs": [
                {"name": "dense", "shape": [b, 13], "datatype": "FP32", "data": dense.flatten().tolist()},
                {"name": "sparse", "shape": [b, 8], "datatype": "INT64", "data": sparse.flatten().tolist()}]})
            assert status == 200, body
            got = np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(body["outputs"][0]["shape"])
            np.testing.assert_array_equal(got, module(dense, sparse).numpy())  # JSON carries float32 exactly
        status, body = _post(f"{base}/v2/models/dlrm/infer", {"inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": [0.0] * 13}]})
        assert status == 400 and "sparse" in body["error"], body
        # the model raises (an id past the embedding tables): this request fails, the server keeps serving
        status, body = _post(f"{base}/v2/models/dlrm/infer", {"inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": [0.0] * 13},
            {"name": "sparse", "shape": [1, 8], "datatype": "INT64", "data": [10**9] * 8}]})
        assert status >= 400 and "recfx model error" in body["error"], body
        status, body = _post(f"{base}/v2/models/dlrm/infer", {"inputs": [
            {"name": "dense", "shape": [1, 13], "datatype": "FP32", "data": [0.0] * 13},
            {"name": "sparse", "shape": [1, 8], "datatype": "INT64", "data": [0] * 8}]})
        assert status == 200, body
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    assert torch.__version__  # the stub imported the same torch: the bundle's version check passed
