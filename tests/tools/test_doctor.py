"""``recfx doctor``: versions, providers, TensorRT presence, backends and why not."""

import json
import sys

from recfx.backends import BACKENDS, Availability, Backend, register_backend
from recfx.bench.env import package_version
from recfx.tools.cli import main


def test_doctor_prints_versions_and_backends(capsys):
    @register_backend("test-doctor-missing")
    class Missing(Backend):
        def availability(self):
            return Availability(False, "libfoo.so not found")

    try:
        assert main(["doctor"]) == 0
    finally:
        BACKENDS.remove("test-doctor-missing")
    out = capsys.readouterr().out
    for word in ("python", "torch", "triton", "onnxruntime", "tensorrt", "eager", "inductor"):
        assert word in out
    assert "CPUExecutionProvider" in out
    assert "libfoo.so not found" in out
    assert "backend='auto' picks" in out
    assert {"trt", "trt-fp8"} <= set(BACKENDS.names())
    assert "│ trt " in out and "not TensorRT itself" in out  # listed with why they cannot run here


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {b["name"] for b in report["backends"]} == set(BACKENDS.names())
    eager = next(b for b in report["backends"] if b["name"] == "eager")
    assert eager["available"] and not eager["fp8"]
    assert report["auto"]["auto"] in BACKENDS.names()
    assert report["python"] == sys.version.split()[0]


def test_package_version_tells_stubs_and_broken_imports_apart(tmp_path, monkeypatch):
    (tmp_path / "stubonly").mkdir()
    (tmp_path / "stubonly" / "__init__.pyi").write_text("def f() -> int: ...\n")
    (tmp_path / "brokenmod.py").write_text("raise ImportError('needs libcuda')\n")
    (tmp_path / "goodmod.py").write_text("__version__ = '1.2.3'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_version("stubonly") == (None, "not installed (only type stubs or an empty namespace folder)")
    version, note = package_version("brokenmod")
    assert version is None and "needs libcuda" in note
    assert package_version("goodmod") == ("1.2.3", "")
    assert package_version("surely_not_installed_xyz") == (None, "not installed")
