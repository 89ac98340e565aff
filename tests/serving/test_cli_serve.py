"""``recfx serve`` and ``recfx export-triton`` from the command line: a bundle served without recompiling, one
answer checked, SIGTERM stops the server gracefully (exit 0); export-triton writes a repository from a bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from recfx.serving.health import free_ports, wait_until_ready
from tests.serving.support import require_serve

require_serve()

import recfx  # noqa: E402
from recfx.models import get_model  # noqa: E402

ROOT = Path(recfx.__file__).parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, recfx.CompiledModule]:
    spec = get_model("dlrm-small")
    fast = recfx.compile(spec.build(), spec.example_inputs(2), backend="eager")
    return fast.save(tmp_path_factory.mktemp("b") / "dlrm", meta={"model": "dlrm-small"}), fast


def _cli(*args: str, **kw: object) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "recfx.tools.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)  # type: ignore[call-overload]


def test_serve_a_bundle_then_sigterm(bundle: tuple[Path, recfx.CompiledModule], tmp_path: Path) -> None:
    path, fast = bundle
    http, grpc, metrics = free_ports(3)
    proc = _cli("serve", str(path), "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port",
                str(metrics), "--max-batch", "4", "--instances", "2", "--queue-delay-us", "500")
    try:
        wait_until_ready(f"http://127.0.0.1:{http}/v2/models/dlrm-small/ready", timeout_s=120, what="recfx serve",
                         alive=lambda: None if proc.poll() is None else proc.communicate()[0][-3000:])
        dense, sparse = get_model("dlrm-small").example_inputs(3, seed=9)
        body = {"inputs": [{"name": "dense", "shape": [3, 13], "datatype": "FP32", "data": dense.flatten().tolist()},
                           {"name": "sparse", "shape": [3, 8], "datatype": "INT64", "data": sparse.flatten().tolist()}]}
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/models/dlrm-small/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.loads(r.read())["outputs"][0]
        np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(out["shape"]),
                                      fast(dense, sparse).numpy())
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "model dlrm-small (eager, max_batch_size 4): dense: FP32[13], sparse: INT64[8]" in output
    assert "stopped" in output
    print(f"\nstopped {time.monotonic() - t0:.1f} s after SIGTERM")


def test_export_triton_from_a_bundle(bundle: tuple[Path, recfx.CompiledModule], tmp_path: Path) -> None:
    path, _ = bundle
    proc = _cli("export-triton", f"dlrm={path}", "--out", str(tmp_path / "repo"), "--instances", "2")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert (tmp_path / "repo" / "dlrm" / "config.pbtxt").is_file() and "python backend" in output
    proc = _cli("export-triton", str(path), "--out", str(tmp_path / "repo"))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "exists; pass --overwrite" in output, output
