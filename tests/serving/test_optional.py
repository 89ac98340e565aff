"""Serving is optional: ``import recfx`` never imports PyTriton, and without it serve / export-triton say how to
install it instead of failing somewhere inside. Runs in the main environment (no PyTriton there)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import recfx
from recfx.serving import ModelServing, ServerAddress, serve
from recfx.serving.signature import signature


def test_import_recfx_does_not_import_pytriton() -> None:
    code = "import sys, recfx, recfx.serving, recfx.tools.cli; recfx.tools.cli.build_parser(); " \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytriton', 'tritonclient')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="PyTriton is installed here")
def test_serve_without_pytriton_says_how_to_install() -> None:
    fast = recfx.compile(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), backend="eager")
    with pytest.raises(recfx.RecfxError, match=r"pip install 'recfx\[serve\]'"):
        serve({"linear": fast})


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="needs dynamic_batching=True"):
        ModelServing(dynamic_batching=False, queue_delay_us=100)
    with pytest.raises(ValueError, match="instances must be >= 1"):
        ModelServing(instances=0)
    with pytest.raises(ValueError, match="must differ"):
        ServerAddress(http_port=9000, grpc_port=9000)
    with pytest.raises(ValueError, match="must be an IP address"):
        ServerAddress(host="localhost")
    assert ModelServing.from_dict(ModelServing(max_batch=4).to_dict()) == ModelServing(max_batch=4)


def test_signature_of_a_batched_module() -> None:
    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, ids + 1

    fast = recfx.compile(Two().eval(), (torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.int64)), backend="eager")
    sig = signature(fast)
    assert sig.batched and sig.batch_dim == "batch"
    assert [(t.name, t.triton_dtype, t.dims) for t in sig.inputs] == [("x", "FP32", (3, 4)), ("ids", "INT64", (5,))]
    assert [(t.triton_dtype, t.dims) for t in sig.outputs] == [("FP32", (3, 4)), ("INT64", (5,))]


def test_python_backend_libdir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The stub's libpython comes from this interpreter's LIBDIR, put first on LD_LIBRARY_PATH only while Triton
    starts; an interpreter without a shared libpython is refused with the reason."""
    import sysconfig

    from recfx.serving.server import python_backend_env, python_backend_libdir

    (tmp_path / "libpython3.11.so.1.0").write_bytes(b"")
    real = sysconfig.get_config_var
    fake = {"LIBDIR": str(tmp_path), "INSTSONAME": "libpython3.11.so.1.0"}
    monkeypatch.setattr(sysconfig, "get_config_var", lambda k: fake.get(k, real(k)))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    assert python_backend_libdir() == str(tmp_path)
    with python_backend_env():
        assert os.environ["LD_LIBRARY_PATH"] == f"{tmp_path}:/opt/other"
    assert os.environ["LD_LIBRARY_PATH"] == "/opt/other"
    fake["INSTSONAME"] = "libpython3.11.a"  # a static build: no shared library to load
    with pytest.raises(recfx.RecfxError, match="built without --enable-shared"):
        python_backend_libdir()


def test_wait_until_ready_says_why_it_gave_up() -> None:
    from recfx.serving.health import free_ports, wait_until_ready

    (port,) = free_ports(1)  # nothing listens there
    with pytest.raises(RuntimeError, match="stopped before it was ready: exit 3"):
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout_s=5, alive=lambda: "exit 3")
    with pytest.raises(RuntimeError, match="was not ready .* within 0 s; see its log"):
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout_s=0.1)


def test_a_transient_start_failure_is_retried_once(monkeypatch) -> None:
    """A model's Python stub that cannot reach PyTriton's handshake socket yet fails one start (seen under load):
    the server starts again, once; any other failure, or a second one, is raised."""
    from recfx.serving import server as server_mod

    fast = recfx.compile(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), backend="eager")
    monkeypatch.setattr(server_mod, "require_pytriton", lambda: object())
    monkeypatch.setattr(server_mod, "check_ports_free", lambda address: None)
    transient = recfx.RecfxError("Triton did not start: InferenceServerException: load failed: ConnectionRefusedError: "
                                 "[Errno 111] Connection refused")
    for failures, fails_with in (([transient], None), ([transient, transient], "Connection refused"),
                                 ([recfx.RecfxError("Triton did not start: bad config")], "bad config")):
        launches = []

        def launch(self, triton_mod, failures=failures, launches=launches):
            launches.append(1)
            if len(launches) <= len(failures):
                raise failures[len(launches) - 1]
            return "triton"

        monkeypatch.setattr(server_mod.Server, "_launch", launch)
        server = server_mod.Server({"linear": fast}, ModelServing(), ServerAddress())
        if fails_with is None:
            assert server.start()._triton == "triton" and len(launches) == 2
        else:
            with pytest.raises(recfx.RecfxError, match=fails_with):
                server.start()
            assert len(launches) == min(len(failures), server_mod.START_ATTEMPTS)
