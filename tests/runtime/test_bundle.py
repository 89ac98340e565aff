"""Bundles: save -> load gives the same outputs bit for bit; damaged, foreign and half-written bundles are refused.

The full matrix (every CPU backend x onerec-tiny, ksa-tiny, dlrm-small) is ``python -m tests.runtime.bundle_matrix``.
"""

import json
import warnings
import zipfile

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

import recfx
from recfx.models import get_model
from recfx.models.common import SwiGLU
from recfx.runtime import bundle, bundle_formats


class Two(nn.Module):
    """Two inputs (one integer), a tuple of two outputs: the calling convention a bundle must keep."""

    def __init__(self):
        super().__init__()
        self.first, self.middle, self.last = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 32)

    def forward(self, x, ids):
        h = self.last(torch.relu(self.middle(torch.relu(self.first(x)))))
        return h.sum(-1) + ids.float(), ids * 2


def two_inputs(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 32, generator=g), torch.randint(0, 9, (batch,), generator=g)


def identical(a, b):
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    return spec_a == spec_b and all(torch.equal(x, y) for x, y in zip(leaves_a, leaves_b))


@pytest.fixture(scope="module")
def eager_bundle(tmp_path_factory):
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend="eager")
    return compiled, compiled.save(tmp_path_factory.mktemp("b") / "two")


def copy_bundle(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("backend", ["eager", "eager-fp8", "ort", "ort-fp8"])
def test_save_load_is_bit_identical_at_two_batch_sizes(backend, tmp_path):
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend=backend)
    loaded = recfx.load(compiled.save(tmp_path / "b"))
    for batch in (2, 7):
        inputs = two_inputs(batch, seed=batch)
        assert identical(loaded(*inputs), compiled(*inputs)), batch
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["versions"]["torch"] == torch.__version__
    assert manifest["inputs"][0] == {"name": "x", "shape": ["batch", 32], "dtype": "float32"}
    assert (manifest["quant"] is not None) == backend.endswith("fp8")
    if backend == "eager-fp8":  # FP8 GEMMs are inside the bundle
        assert "fp8_linear" in loaded.graph_module.code
    assert loaded.report.backend == backend and "loaded from bundle" in loaded.report.render()
    assert loaded.report.passes == compiled.report.passes
    with pytest.raises(TypeError, match="'x' must be torch.float32"):  # the same input checks as the original
        loaded(torch.randn(2, 32, dtype=torch.float64), torch.arange(2))


@pytest.mark.parametrize("backend", ["eager", "ort"])
def test_dlrm_small_round_trip(backend, tmp_path):
    spec = get_model("dlrm-small")
    compiled = recfx.compile(spec.build(), spec.example_inputs(2), backend=backend)
    loaded = recfx.load(compiled.save(tmp_path / "b"))
    for batch in (2, 5):
        inputs = spec.example_inputs(batch, seed=batch)
        assert identical(loaded(*inputs), compiled(*inputs)), batch


@pytest.mark.slow
def test_inductor_bundle_is_an_aoti_package(tmp_path):
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend="inductor")
    path = compiled.save(tmp_path / "b")
    assert (path / "model.pt2").is_file()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "aoti" and manifest["device"]["isa"]
    assert "sse2" in manifest["device"]["host"]["features"] or manifest["device"]["host"]["machine"] != "x86_64"
    loaded = recfx.load(path)
    assert not loaded.has_graph_module
    with pytest.raises(recfx.RecfxError, match="holds compiled code, not an FX graph"):
        loaded.graph_module
    for batch in (2, 7):
        inputs = two_inputs(batch, seed=batch)
        assert identical(loaded(*inputs), compiled(*inputs)), batch
    # the package also loads with AOTInductor's own loader, to the same outputs
    inputs = two_inputs(3, seed=3)
    assert identical(torch._inductor.aoti_load_package(str(path / "model.pt2"))(*inputs), compiled(*inputs))
    # recfx runs the package's library from a private extracted folder that goes with the module
    runner = loaded._runner
    folder = runner._folder
    assert len(list(folder.glob("*.so"))) == 1
    del loaded, runner
    import gc

    gc.collect()
    assert not folder.exists()


@pytest.mark.parametrize("members, message", [
    (["m/data/aotinductor/model/a.wrapper.so", "m/data/aotinductor/model/b.wrapper.so"], "2 shared libraries"),
    (["m/archive_version"], "0 shared libraries .*C[+][+]-only"),
    (["a/data/aotinductor/model/x.so", "b/data/aotinductor/model/x.so"], "model files under several roots"),
    (["m/data/aotinductor/model/x.so", "m/data/aotinductor/model/sub/y.cubin"], "nested or repeated model files"),
    (["m/data/aotinductor/model/x.so", "m/data/aotinductor/model/x_weights.blob"], "weights stored beside"),
    (["m/data/aotinductor/model/x.so", "m/data/weights/w0"], "weights stored beside"),
    (["m/data/aotinductor/model/x.so", "m/data/aotinductor/model/x.so"], "nested or repeated model files"),
])
def test_aoti_package_recfx_cannot_run_is_refused_and_leaves_nothing(members, message, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    package = tmp_path / "model.pt2"
    with warnings.catch_warnings(), zipfile.ZipFile(package, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns of the repeated name, which is the point
        for name in members:
            archive.writestr(name, b"")
    with pytest.raises(recfx.BundleError, match=f"not an AOTInductor package as recfx writes it: {message}"):
        bundle_formats.AotiModel(package, torch.device("cpu"))
    package.write_bytes(b"not a zip")
    with pytest.raises(recfx.BundleError, match="cannot load the AOTInductor package .*BadZipFile"):
        bundle_formats.AotiModel(package, torch.device("cpu"))
    with pytest.raises(recfx.BundleError, match="run on CPU or CUDA devices, not meta"):
        bundle_formats.AotiModel(package, torch.device("meta"))
    assert list(scratch.iterdir()) == []  # every refusal removed its temporary folder


def test_cache_key_device_needs_no_isa_probe(monkeypatch):
    import platform

    monkeypatch.setattr(bundle, "device_record", lambda device: pytest.fail("the ISA probe ran"))
    here = {"machine": platform.machine(), "features": ["avx2"], "vector_lengths": {}}
    monkeypatch.setattr(bundle, "host_record", lambda: here)
    key = json.dumps(bundle.device_key(torch.device("cpu")))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # Inductor's ISA pick reads it: so does the key
    assert json.dumps(bundle.device_key(torch.device("cpu"))) != key
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert json.dumps(bundle.device_key(torch.device("cpu"))) == key
    here["features"] = ["avx2", "avx512_f"]
    assert json.dumps(bundle.device_key(torch.device("cpu"))) != key


def test_host_checks_do_not_import_inductor():
    """Loading a bundle must not pay Inductor's import (~1 s): the host record reads its settings from the
    environment until Inductor's config is imported."""
    import os
    import subprocess
    import sys

    code = ("import sys, torch, recfx; from recfx.runtime import bundle; h = bundle.host_record(); "
            "k = bundle.device_key(torch.device('cpu')); "
            "print('torch._inductor.config' in sys.modules, h['march'], k['march'])")
    env = {**os.environ, "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "x86-64-v3", "x86-64-v3"]


def test_arm_vector_length_must_match(monkeypatch):
    here = {"machine": "aarch64", "features": ["sve"], "vector_lengths": {"sve_max_length": 128}}
    monkeypatch.setattr(bundle, "host_record", lambda: here)
    built = {"type": "cpu", "isa": "sve256", "host": {"machine": "aarch64", "features": ["sve"],
                                                     "vector_lengths": {"sve_max_length": 256}}}
    assert bundle._host_problem(built) == ("built for vector lengths {'sve_max_length': 256}; this CPU has "
                                           "{'sve_max_length': 128}")
    built["host"]["vector_lengths"] = {"sve_max_length": 128}
    assert bundle._host_problem(built) is None


def test_gpu_bundle_without_cuda_here_is_refused(eager_bundle):
    manifest = json.loads((eager_bundle[1] / "manifest.json").read_text())
    manifest.update(format="aoti", device={"type": "cuda", "name": "NVIDIA H100", "capability": [9, 0]})
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(recfx.BundleDeviceError, match="holds GPU code; this process cannot use cuda:0"):
        bundle.check_compatible(manifest, torch.device("cuda", 0), eager_bundle[1])


def test_cuda_fp8_bundles_replay_cuda_graphs_on_a_single_threaded_runner(monkeypatch, tmp_path):
    from recfx.backends.cuda_graphs import BatchGraphs

    made = []
    monkeypatch.setattr(bundle_formats, "AotiModel", lambda path, device, single_threaded: made.append(
        (device.type, single_threaded)) or (lambda *args: args))
    cuda = torch.device("cuda", 0)
    runner = bundle_formats.read_aoti(tmp_path, {"backend": "cuda-fp8", "backend_options": {}}, cuda)
    assert isinstance(runner, BatchGraphs) and runner.batches == (1, 2, 4, 8) and made[-1] == ("cuda", True)
    off = {"backend": "cuda-fp8", "backend_options": {"cuda_graph_batches": []}}
    assert not isinstance(bundle_formats.read_aoti(tmp_path, off, cuda), BatchGraphs) and made[-1] == ("cuda", False)
    runner = bundle_formats.read_aoti(tmp_path, {"backend": "inductor"}, cuda)
    assert not isinstance(runner, BatchGraphs) and made[-1] == ("cuda", False)


def test_aoti_code_needs_the_compiling_cpus_features(monkeypatch):
    """Inductor builds C++ with -march=native: every CPU feature of the compiling host must be on the loading one."""
    import platform

    here = {"machine": platform.machine(), "features": ["avx2", "avx512_f", "f16c", "fma3"]}
    monkeypatch.setattr(bundle, "host_record", lambda: here)
    monkeypatch.setattr(bundle, "device_record", lambda device: {"type": "cpu", "isa": "avx2"})  # the slow probe
    built = {"type": "cpu", "isa": "avx2", "host": {"machine": platform.machine(), "features": ["avx2", "fma3"]}}
    assert bundle._host_problem(built) is None
    built["host"]["features"] += ["avx512_vnni", "avx512_bf16"]
    assert bundle._host_problem(built) == ("built with -march=native on a CPU with features this one lacks: "
                                           "avx512_bf16, avx512_vnni")
    built["host"] = {"machine": "aarch64", "features": []}
    assert "built on a aarch64 machine" in bundle._host_problem(built)
    gpu = {"type": "cuda", "capability": [9, 0], "host": {"machine": platform.machine(), "features": ["amx_tile"]}}
    assert "amx_tile" in bundle._host_problem(gpu)  # a GPU bundle's host wrapper is C++ too
    # a manifest without features (an older recfx): CPU code needs Inductor's own ISA pick to match; GPU code passes
    assert bundle._host_problem({"type": "cpu", "isa": "avx2"}) is None
    assert bundle._host_problem({"type": "cpu", "isa": "avx512"}) == "for the avx512 vector ISA; this CPU picks avx2"
    assert bundle._host_problem({"type": "cuda", "capability": [9, 0]}) is None
    # code built for a target the user chose (TORCHINDUCTOR_CPP_MARCH): the architecture is checked, not features
    chosen = {"machine": platform.machine(), "features": ["amx_tile"], "march": "x86-64-v3"}
    assert bundle._host_problem({"type": "cpu", "isa": "avx2", "host": chosen}) is None


def test_a_loaded_module_saves_again(eager_bundle, tmp_path):
    compiled, path = eager_bundle
    again = recfx.load(recfx.load(path).save(tmp_path / "again"))
    inputs = two_inputs(3)
    assert identical(again(*inputs), compiled(*inputs))


def test_flipped_byte_is_refused(eager_bundle, tmp_path):
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    data = bytearray((path / "program.pt2").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "program.pt2").write_bytes(bytes(data))
    with pytest.raises(recfx.BundleIntegrityError, match=r"program\.pt2 changed since it was saved \(SHA-256"):
        recfx.load(path)


def test_truncated_file_is_refused(eager_bundle, tmp_path):
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    data = (path / "program.pt2").read_bytes()
    (path / "program.pt2").write_bytes(data[:-100])
    with pytest.raises(recfx.BundleIntegrityError, match=r"program\.pt2 is \d+ bytes, the manifest says .*truncated"):
        recfx.load(path)


def test_missing_file_and_missing_manifest_are_refused(eager_bundle, tmp_path):
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    (path / "program.pt2").unlink()
    with pytest.raises(recfx.BundleIntegrityError, match=r"program\.pt2 listed in the manifest is missing"):
        recfx.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(recfx.BundleIntegrityError, match="has no manifest.json: not a recfx bundle"):
        recfx.load(path)
    with pytest.raises(FileNotFoundError, match="no recfx bundle at"):
        recfx.load(tmp_path / "nothing")


def edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_from_another_torch_version_is_refused(eager_bundle, tmp_path):
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    edit_manifest(path, lambda m: m["versions"].update(torch="2.99.0"))
    with pytest.raises(recfx.BundleVersionError, match=r"built with torch 2\.99\.0; this process has torch .* Load it "
                                                       r"with torch 2\.99\.0, or compile the model again"):
        recfx.load(path)
    edit_manifest(path, lambda m: m.update(format="tensorrt"))
    with pytest.raises(recfx.BundleIntegrityError, match="unknown format 'tensorrt'"):
        recfx.load(path)
    edit_manifest(path, lambda m: m.update(bundle_version=99))
    with pytest.raises(recfx.BundleVersionError, match="bundle format 99; this recfx .* reads format 1"):
        recfx.load(path)


def test_bundle_for_another_device_is_refused(eager_bundle, tmp_path):
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    edit_manifest(path, lambda m: m.update(device={"type": "cuda", "name": "NVIDIA H200", "capability": [9, 0]}))
    with pytest.raises(recfx.BundleDeviceError, match=r"compiled for cuda \(NVIDIA H200, sm_90\); it cannot run on "
                                                      r"cpu\. Load it with device='cuda'"):
        recfx.load(path, device="cpu")
    with pytest.raises(recfx.BundleDeviceError, match="compiled for cpu"):
        recfx.load(eager_bundle[1], device="meta")


def test_aoti_bundle_for_another_cpu_isa_or_gpu_arch_is_refused(eager_bundle):
    manifest = json.loads((eager_bundle[1] / "manifest.json").read_text())
    manifest.update(format="aoti", device={"type": "cpu", "isa": "avx512-from-elsewhere"})
    with pytest.raises(recfx.BundleDeviceError, match="C[+][+] code for the avx512-from-elsewhere vector ISA"):
        bundle.check_compatible(manifest, torch.device("cpu"), eager_bundle[1])


def test_gpu_bundle_for_another_architecture_or_triton_is_refused(eager_bundle, monkeypatch):
    manifest = json.loads((eager_bundle[1] / "manifest.json").read_text())
    manifest.update(format="aoti", device={"type": "cuda", "name": "NVIDIA H200", "capability": [9, 0]})
    here = {"type": "cuda", "name": "NVIDIA A100", "capability": [8, 0]}
    monkeypatch.setattr(bundle, "device_record", lambda device: here)
    versions = dict(manifest["versions"])
    monkeypatch.setattr(bundle, "_versions", lambda: versions)
    with pytest.raises(recfx.BundleDeviceError, match=r"GPU code for NVIDIA H200, sm_90; cuda:0 is NVIDIA A100, "
                                                      r"sm_80\. Compile the model on this GPU architecture"):
        bundle.check_compatible(manifest, torch.device("cuda", 0), eager_bundle[1])
    manifest["versions"]["triton"] = "0.0.1"
    with pytest.raises(recfx.BundleVersionError, match="built with triton 0.0.1"):
        bundle.check_compatible(manifest, torch.device("cuda", 0), eager_bundle[1])


def test_interrupted_save_leaves_no_bundle(tmp_path, monkeypatch):
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend="eager")
    real = bundle_formats.write_exported

    def write_then_die(ep, folder):
        real(ep, folder)  # the program is on disk, the manifest is not yet
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_formats, "write_exported", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        compiled.save(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its temporary folder


def test_existing_path_needs_overwrite(eager_bundle, tmp_path):
    compiled, _ = eager_bundle
    path = compiled.save(tmp_path / "b")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        compiled.save(path)
    compiled.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert recfx.load(path).backend == "eager"


def test_a_writer_that_lost_the_race_keeps_the_winner(tmp_path):
    target = tmp_path / "entry"
    with bundle.atomic_folder(target) as tmp:
        (tmp / "ours").write_text("ours")
        target.mkdir()  # another process renamed its complete entry into place meanwhile
        (target / "theirs").write_text("theirs")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"] and [p.name for p in target.iterdir()] == ["theirs"]


def test_unbundleable_backend_raises_before_writing(eager_bundle, tmp_path, monkeypatch):
    compiled, _ = eager_bundle
    monkeypatch.setattr(bundle_formats, "bundle_format", _no_format)
    with pytest.raises(recfx.BundleUnsupportedError, match="has no bundle format"):
        compiled.save(tmp_path / "b")
    assert not (tmp_path / "b").exists()


def _no_format(backend):
    raise bundle_formats.BundleUnsupportedError(f"backend {backend!r} has no bundle format")


def test_exported_program_with_pickles_is_refused(tmp_path):
    path = tmp_path / "program.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("program/data/weights/model_weights_config.json",
                   json.dumps({"config": {"lin.weight": {"use_pickle": True}}}))
    with pytest.raises(recfx.BundleError, match=r"stores \['lin.weight'\] as pickles"):
        bundle_formats.check_no_pickle(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("program/data/sample_inputs/model.pt", b"\x80\x04pickled")
    with pytest.raises(recfx.BundleError, match="pickled sample inputs"):
        bundle_formats.check_no_pickle(path)


@pytest.mark.parametrize("name", ["recfx.runtime.compiled", "recfx.api"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_deploy_doc_example_runs(capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    first = re.search(r"```python\n(.*?)```", text, flags=re.S)
    exec(compile(first.group(1), "docs/deploy.md", "exec"), {})
    assert "loaded from bundle" in capsys.readouterr().out


def test_onnx_bundle_keeps_external_data_usable(tmp_path, monkeypatch):
    import recfx.onnx.write

    monkeypatch.setattr(recfx.onnx.write, "EXTERNAL_DATA_BYTES", 0)  # as for a model over protobuf's 2 GiB
    config = recfx.CompileConfig(backend_options={"cache_dir": str(tmp_path / "ort")})
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend="ort", config=config)
    path = compiled.save(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["model_file"] + ".data" in manifest["files"]
    loaded = recfx.load(path)
    inputs = two_inputs(3, seed=3)
    assert identical(loaded(*inputs), compiled(*inputs))


def test_host_record_on_an_inductor_without_cpp_march(monkeypatch):
    """torch 2.11's Inductor config has no ``cpp.march`` (2.13's has): the host record must not need it (a save on
    the H100 image failed with AttributeError before this)."""
    import sys
    import types

    class Cpp:
        simdlen = None

        def __getattr__(self, name):
            raise AttributeError(f"torch._inductor.config.cpp.{name} does not exist")

    monkeypatch.setitem(sys.modules, "torch._inductor.config", types.SimpleNamespace(cpp=Cpp()))
    assert bundle._cpp_settings() == {"simdlen": None, "march": None}
    assert bundle.host_record()["march"] is None


def test_aoti_loading_puts_libstdcxx_in_the_global_scope():
    """An AOTInductor library resolves libstdc++'s template symbols (std::locale, std::regex) in the global scope;
    Python opens PyTorch's libraries locally, and on the H100 image the library then crashed building its model.
    After the step AotiModel takes first, a symbol of libstdc++ is found from the global scope."""
    import ctypes

    bundle_formats._share_libstdcxx()
    assert ctypes.CDLL(None)._ZNSt6locale7classicEv  # std::locale::classic(), looked up from the global scope


def test_march_from_the_environment_only_where_inductor_reads_it(monkeypatch):
    """Before Inductor's config is imported the host record reads ``TORCHINDUCTOR_CPP_MARCH``; on a torch whose
    Inductor has no such setting (2.11) the code is native whatever the variable says, and the record says so."""
    import sys

    monkeypatch.delitem(sys.modules, "torch._inductor.config", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CPP_MARCH", "x86-64-v3")
    monkeypatch.setattr(bundle, "_inductor_has_march", lambda: False)
    assert bundle._cpp_settings()["march"] is None
    monkeypatch.setattr(bundle, "_inductor_has_march", lambda: True)
    assert bundle._cpp_settings()["march"] == "x86-64-v3"


def test_the_manifest_records_the_autotuner_choices(tmp_path, monkeypatch):
    from recfx.kernels import autotune

    choices = {"ksa_prefill": [{"key": [128, "torch.bfloat16"], "config": {
        "kwargs": {"BLOCK_M": 64}, "num_warps": 4, "num_stages": 2, "num_ctas": 1, "maxnreg": None}}]}
    monkeypatch.setattr(autotune, "record", lambda: choices)
    compiled = recfx.compile(Two().eval(), two_inputs(4), backend="eager")
    path = compiled.save(tmp_path / "b")
    assert json.loads((path / "manifest.json").read_text())["autotune"] == choices


def test_a_cpu_load_replays_no_choices_and_an_older_manifest_loads(eager_bundle, tmp_path, monkeypatch):
    from recfx.kernels import autotune

    assert isinstance(json.loads((eager_bundle[1] / "manifest.json").read_text())["autotune"], dict)
    monkeypatch.setattr(autotune, "replay", lambda choices: pytest.fail("a CPU load replayed autotuner choices"))
    path = copy_bundle(eager_bundle[1], tmp_path / "b")
    edit_manifest(path, lambda m: m.update(autotune=[["malformed"]]))
    recfx.load(path)  # not read for a CPU target
    edit_manifest(path, lambda m: m.pop("autotune"))  # a bundle from before the field
    inputs = two_inputs(3)
    assert identical(recfx.load(path)(*inputs), eager_bundle[0](*inputs))


def test_a_cuda_load_replays_the_choices(eager_bundle, monkeypatch, caplog):
    from recfx.kernels import autotune

    replayed = []
    monkeypatch.setattr(autotune, "replay", lambda choices: replayed.append(choices) or 3)
    monkeypatch.setattr(bundle, "device_record", lambda device: {"capability": [9, 0]})
    cuda, path, h100 = torch.device("cuda", 0), eager_bundle[1], {"capability": [9, 0]}
    with caplog.at_level("INFO", logger=bundle.__name__):
        bundle._replay_autotune({"autotune": {"ksa_prefill": []}, "device": h100}, cuda, path)
        bundle._replay_autotune({"device": h100}, cuda, path)  # an older manifest: nothing to replay
        # tuned on another architecture: its tile shapes may not fit this GPU
        bundle._replay_autotune({"autotune": {"ksa_prefill": []}, "device": {"capability": [8, 0]}}, cuda, path)
    assert replayed == [{"ksa_prefill": []}]
    assert "replayed 3 Triton autotuner choices" in caplog.text
    assert "saved on compute capability [8, 0], this GPU is [9, 0]" in caplog.text


def test_a_malformed_autotune_field_is_a_damaged_bundle(eager_bundle, monkeypatch):
    monkeypatch.setattr(bundle, "device_record", lambda device: {"capability": [9, 0]})
    with pytest.raises(recfx.BundleIntegrityError, match=r"'autotune' field is malformed \(autotune choices of kernel "
                                                         r"'ksa_prefill' must be a list.*copy it again or save it"):
        bundle._replay_autotune({"autotune": {"ksa_prefill": 3}, "device": {"capability": [9, 0]}},
                                torch.device("cuda", 0), eager_bundle[1])


class SqueezeBatch(nn.Module):
    """Squeezes the batch dim: (8, 16) for a batch of 1, (B, 8, 16) otherwise."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        return self.proj(x).squeeze(0) * 2


def _exported(module, dim):
    return torch.export.export(module, (torch.randn(2, 8, 16),), dynamic_shapes=({0: dim},))


def test_squeezing_a_dynamic_dim_that_may_be_1_is_a_hazard_for_compiled_bundles():
    hazards = bundle_formats.size_one_hazards(_exported(SqueezeBatch().eval(), torch.export.Dim("batch")))
    assert len(hazards) == 1 and "squeezes dim 0" in hazards[0] and "x dim 0" in hazards[0]
    assert "squeeze(0)" in hazards[0]  # the model's own line


class SqueezeStatic(nn.Module):
    def forward(self, x):
        return x.unsqueeze(1).squeeze(1).squeeze() + 1  # static size-1 dims only (and the batch, at least 2)


def test_squeezes_that_cannot_meet_a_1_are_not_hazards():
    # a dynamic dim exported for sizes of 2 and more: squeeze(0) never drops it
    assert bundle_formats.size_one_hazards(_exported(SqueezeBatch().eval(),
                                                     torch.export.Dim("batch", min=2))) == []
    assert bundle_formats.size_one_hazards(_exported(SqueezeStatic().eval(),
                                                     torch.export.Dim("batch", min=2))) == []
    # a squeeze of every dim (no dims given) does meet the dynamic batch when it may be 1
    hazards = bundle_formats.size_one_hazards(_exported(SqueezeStatic().eval(), torch.export.Dim("batch")))
    assert len(hazards) == 1 and "squeezes dim 0" in hazards[0]


def test_an_inductor_bundle_of_a_graph_squeezing_its_batch_is_refused_and_nothing_written(tmp_path):
    # AOTInductor compiles one graph for every batch size and would return (1, 8, 16) for a batch of 1
    model = SqueezeBatch().eval()
    compiled = recfx.compile(model, (torch.randn(2, 8, 16),), backend="inductor",
                             config=recfx.CompileConfig(check_numerics=False))
    one = torch.randn(1, 8, 16)
    assert compiled(one).shape == model(one).shape == (8, 16)  # in process: torch compiles batch 1 apart
    with pytest.raises(recfx.BundleUnsupportedError, match=r"squeezes a dynamic dim that may be 1.*x dim 0.*"
                                                           r"backend 'eager'"):
        compiled.save(tmp_path / "b")
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []
    eager = recfx.compile(model, (torch.randn(2, 8, 16),), backend="eager")  # the exported program squeezes per call
    assert recfx.load(eager.save(tmp_path / "e"))(one).shape == (8, 16)


def test_ort_says_why_it_cannot_export_a_graph_squeezing_its_batch():
    pytest.importorskip("onnxruntime")
    # (without the check the ONNX checker fails with "Inferred shape and existing shape differ in rank")
    with pytest.raises(recfx.RecfxError, match=r"squeezes a dynamic dim that may be 1.*x dim 0.*ONNX Squeeze with "
                                               r"axes.*--static-shapes.*backend 'inductor' or 'eager'"):
        recfx.compile(SqueezeBatch().eval(), (torch.randn(2, 8, 16),), backend="ort",
                      config=recfx.CompileConfig(check_numerics=False))


class ClickHead(nn.Module):
    """A CTR head: ``sigmoid(...).squeeze()`` on [B, 1], a scalar for a batch of 1 as in PyTorch."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 1)

    def forward(self, x):
        return torch.sigmoid(self.proj(x)).squeeze()


def test_ort_runs_a_squeeze_without_dims_which_onnx_decides_at_run_time():
    pytest.importorskip("onnxruntime")
    model = ClickHead().eval()
    compiled = recfx.compile(model, (torch.randn(2, 16),), backend="ort",
                             config=recfx.CompileConfig(check_numerics=False))
    for batch in (1, 3):
        x = torch.randn(batch, 16)
        got = compiled(x)
        assert got.shape == model(x).shape and torch.allclose(got, model(x), atol=1e-6)
    # compiled once for every size, AOTInductor could not: the bundle check counts squeeze() too
    ep = torch.export.export(model, (torch.randn(2, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert len(bundle_formats.size_one_hazards(ep)) == 1


def test_cuda_fp8_bundle_calls_the_silu_op_through_the_package(monkeypatch, tmp_path):
    """A ``cuda-fp8`` bundle of a SwiGLU MLP holds ``recfx::silu_mul_fp8`` (a default since run 11) as a call through
    AOTInductor's proxy executor; on the CPU (the GPU check stood in) it loads and gives the same numbers."""
    from recfx.backends.base import Availability
    from recfx.backends.fp8 import CudaFp8Backend

    monkeypatch.setattr(CudaFp8Backend, "availability", lambda self: Availability(True, ""))
    torch.manual_seed(0)
    x = torch.randn(2, 8, 64)
    quant = recfx.QuantConfig(rules=tuple(recfx.QuantRule("include", path=p) for p in ("w1", "w3", "w2")))
    config = recfx.CompileConfig(backend_options={"cuda_graph_batches": ()})
    compiled = recfx.compile(SwiGLU(64, 176).eval(), (x,), backend="cuda-fp8", quant=quant, config=config)
    assert compiled.report.sections["fp8_gemm"].silu_kernels == 1
    compiled.save(tmp_path / "b")
    loaded = recfx.load(tmp_path / "b")
    fresh = torch.randn(3, 8, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(fresh), compiled(fresh))
