"""The compile cache: a hit loads the bundle instead of compiling; the key follows weights, configs and backend;
two processes filling one entry at once leave one complete entry."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import recfx
from recfx.passes import PassManager
from recfx.runtime import cache


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()


def entries(folder):
    """The cache's entries (not its fingerprint index)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name != "index")


def test_hit_loads_the_bundle_without_compiling(tmp_path, monkeypatch):
    x = torch.randn(4, 16)
    first = recfx.compile(mlp(), (x,), backend="eager", cache_dir=tmp_path)
    assert first.bundle_path is None and len(entries(tmp_path)) == 1

    def no_passes(self, gm):
        raise AssertionError("a cache hit must not run the pass pipeline")

    monkeypatch.setattr(PassManager, "run", no_passes)
    hit = recfx.compile(mlp(), (x,), backend="eager", cache_dir=tmp_path)
    assert hit.bundle_path == tmp_path / entries(tmp_path)[0]
    y = torch.randn(3, 16)
    assert torch.equal(hit(y), first(y))
    assert hit.report.passes == first.report.passes


def test_key_follows_weights_config_quant_and_backend(tmp_path):
    x = torch.randn(4, 16)
    recfx.compile(mlp(0), (x,), backend="eager", cache_dir=tmp_path)
    recfx.compile(mlp(1), (x,), backend="eager", cache_dir=tmp_path)  # other weights
    recfx.compile(mlp(0), (x,), backend="eager", cache_dir=tmp_path,
                  config=recfx.CompileConfig(dynamic_batch=False))  # another config
    recfx.compile(mlp(0), (x,), backend="eager-fp8", cache_dir=tmp_path)  # another backend
    recfx.compile(mlp(0), (x,), backend="eager-fp8", cache_dir=tmp_path,
                  quant=recfx.QuantConfig(weight="per_tensor"))  # another quant config
    assert len(entries(tmp_path)) == 5
    recfx.compile(mlp(0), (x,), backend="eager", cache_dir=tmp_path,
                  config=recfx.CompileConfig(dump_after=()))  # dump settings do not change the code
    assert len(entries(tmp_path)) == 5


def test_environment_variable_turns_the_cache_on(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    recfx.compile(mlp(), (torch.randn(4, 16),), backend="eager")
    assert len(entries(tmp_path)) == 1


def test_damaged_entry_is_compiled_again(tmp_path, caplog):
    x = torch.randn(4, 16)
    recfx.compile(mlp(), (x,), backend="eager", cache_dir=tmp_path)
    entry = tmp_path / entries(tmp_path)[0]
    program = entry / "program.pt2"
    program.write_bytes(program.read_bytes()[:-10])
    again = recfx.compile(mlp(), (x,), backend="eager", cache_dir=tmp_path)
    assert again.bundle_path is None and "unusable" in caplog.text
    assert entries(tmp_path) == [entry.name] and recfx.load(entry).backend == "eager"  # replaced by a good one


_CHILD = textwrap.dedent("""
    import sys, torch, recfx
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    m = recfx.compile(model, (torch.randn(4, 16),), backend="eager", cache_dir=sys.argv[1])
    torch.manual_seed(1)
    x = torch.randn(3, 16)
    torch.save(m(x), sys.argv[2])
""")


@pytest.mark.slow
def test_two_processes_compiling_one_key_leave_one_complete_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(recfx.__file__).parents[1])}
    folder = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(tmp_path / f"out{i}.pt")], env=env)
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(entries(folder)) == 1  # one entry, no temporary folders left
    loaded = recfx.load(folder / entries(folder)[0])
    torch.manual_seed(1)
    x = torch.randn(3, 16)
    want = torch.load(tmp_path / "out0.pt")
    assert torch.equal(torch.load(tmp_path / "out1.pt"), want) and torch.equal(loaded(x), want)


@pytest.mark.parametrize("backend", ["eager"])
def test_calibration_generator_is_hashed_and_still_used(tmp_path, backend):
    x = torch.randn(4, 16)
    quant = recfx.QuantConfig(activation="static_per_tensor")
    batches = ((torch.randn(4, 16),) for _ in range(2))  # a generator: read once for the key, once for calibration
    m = recfx.compile(mlp(), (x,), backend=f"{backend}-fp8", cache_dir=tmp_path, quant=quant, calibration=batches)
    assert m.report.numerics[0].cosine > 0.99
    other = [(torch.randn(4, 16) * 3,) for _ in range(2)]
    recfx.compile(mlp(), (x,), backend=f"{backend}-fp8", cache_dir=tmp_path, quant=quant, calibration=other)
    assert len(entries(tmp_path)) == 2


class Scaled(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.lin, self.scale = nn.Linear(16, 8), scale

    def forward(self, x):
        return self.lin(x) * self.scale


def test_second_compile_of_the_same_call_is_not_even_captured(tmp_path, monkeypatch):
    import recfx.api

    x = torch.randn(4, 16)
    first = recfx.compile(mlp(), (x,), backend="eager", cache_dir=tmp_path)
    assert len(list((tmp_path / "index").iterdir())) == 1

    def no_capture(*args, **kwargs):
        raise AssertionError("a fingerprint hit must not trace the model")

    monkeypatch.setattr(recfx.api, "capture", no_capture)
    hit = recfx.compile(mlp(), (torch.randn(4, 16),), backend="eager", cache_dir=tmp_path)
    assert hit.bundle_path is not None and torch.equal(hit(x), first(x))
    with pytest.raises(AssertionError, match="must not trace"):  # other weights: another fingerprint, so a capture
        recfx.compile(mlp(seed=3), (x,), backend="eager", cache_dir=tmp_path)


def test_fingerprint_follows_plain_attributes_and_skips_hooked_models():
    x = torch.randn(4, 16)
    keys = [cache.fingerprint(Scaled(s), (x,), {}, None, None, "eager") for s in (1.0, 2.0)]
    torch.manual_seed(0)
    a = Scaled(1.0)
    torch.manual_seed(0)
    b = Scaled(1.0)
    assert None not in keys and keys[0] != keys[1]  # Scaled's source is this file: it has a fingerprint
    assert cache.fingerprint(a, (x,), {}, None, None, "eager") == cache.fingerprint(b, (x,), {}, None, None, "eager")
    assert cache.fingerprint(mlp(), (x,), {}, None, None, "eager") != cache.fingerprint(
        mlp(), (torch.randn(5, 16),), {}, None, None, "eager")  # input shapes are part of it
    hooked = mlp()
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    assert cache.fingerprint(hooked, (x,), {}, None, None, "eager") is None
