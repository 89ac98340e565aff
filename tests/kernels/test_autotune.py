"""Autotuner choices through JSON: a replayed key is a hit on the kernel's own Config object (pre_hook included), a
key this process tuned keeps its choice, unknown kernels and configs are skipped with a warning, malformed records
raise, and recording imports nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from recfx.kernels import autotune

triton = pytest.importorskip("triton")
tl = triton.language

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                reason="needs a GPU or TRITON_INTERPRET=1")


def _hook(nargs: dict) -> None:
    """A pre_hook, as the KSA kernel's TMA box setup: a config rebuilt from its record would lack it."""


@triton.jit
def _double_body(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n) * 2, mask=offs < n)


CONFIGS = [triton.Config({"BLOCK": 16}, num_warps=1, num_stages=1, pre_hook=_hook),
           triton.Config({"BLOCK": 32}, num_warps=1, num_stages=1, pre_hook=_hook)]
_double_kernel = triton.autotune(configs=CONFIGS, key=["n"])(_double_body)


@pytest.fixture
def double(monkeypatch):
    """The dummy kernel registered as ``double``, with an empty cache and timings that make BLOCK=32 the fastest
    (the interpreter cannot time; nor can a test rely on timings)."""
    monkeypatch.setitem(autotune.KERNELS, "double", (__name__, "_double_kernel"))
    monkeypatch.setattr(_double_kernel, "_bench", lambda *args, config, **kwargs: [1.0 / config.kwargs["BLOCK"]],
                        raising=False)
    _double_kernel.cache.clear()
    yield _double_kernel
    _double_kernel.cache.clear()


def _launch(n: int) -> torch.Tensor:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.arange(n, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    _double_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK"]),)](x, y, n)
    assert torch.equal(y, 2 * x)
    return y


def _through_json(choices):
    return json.loads(json.dumps(choices))


def _entry(key, block=32):
    return {"key": key, "config": {"kwargs": {"BLOCK": block}, "num_warps": 1, "num_stages": 1, "num_ctas": 1,
                                   "maxnreg": None}}


def test_a_replayed_choice_is_a_hit_on_the_kernels_own_config(double, monkeypatch):
    _launch(40)  # tunes key (40, 'torch.float32', 'torch.float32'): BLOCK=32
    choices = _through_json(autotune.record())
    assert choices["double"] == [_entry([40, "torch.float32", "torch.float32"])]
    double.cache.clear()

    assert autotune.replay(choices) == 1
    key = (40, "torch.float32", "torch.float32")
    assert double.cache[key] is CONFIGS[1]  # the object itself: its pre_hook stays
    monkeypatch.setattr(double, "_bench", lambda *args, **kwargs: pytest.fail("a replayed key was tuned again"),
                        raising=False)
    _launch(40)  # the key Autotuner.run builds (named key args, then each tensor's str(dtype)) is the replayed one
    assert double.best_config is CONFIGS[1]


def test_record_is_sorted_and_leaves_out_keys_that_are_not_json(double):
    double.cache.update({(9, "b"): CONFIGS[0], (10, "a"): CONFIGS[1], (3, (1, 2)): CONFIGS[0]})
    assert [e["key"] for e in autotune.record()["double"]] == [[10, "a"], [9, "b"]]  # by the JSON text: "[1" < "[9"


def test_a_key_tuned_here_keeps_its_choice(double):
    double.cache[(40, "torch.float32", "torch.float32")] = CONFIGS[0]
    assert autotune.replay({"double": [_entry([40, "torch.float32", "torch.float32"])]}) == 0
    assert double.cache[(40, "torch.float32", "torch.float32")] is CONFIGS[0]


def test_an_unknown_kernel_is_skipped_with_a_warning(double, caplog):
    with caplog.at_level("WARNING", logger=autotune.__name__):
        assert autotune.replay({"from_a_newer_recfx": [{"anything": 1}], "double": [_entry([1])]}) == 1
    assert "kernel 'from_a_newer_recfx' skipped: this recfx has no such autotuned kernel" in caplog.text


def test_a_config_not_among_the_kernels_is_skipped_with_a_warning(double, caplog):
    with caplog.at_level("WARNING", logger=autotune.__name__):
        assert autotune.replay({"double": [_entry([1], block=64), _entry([2], block=32)]}) == 1
    assert "key (1,) skipped: its config" in caplog.text and "none of the kernel's 2 configs" in caplog.text
    assert set(double.cache) == {(2,)}


def test_a_config_that_matches_two_of_the_kernels_is_skipped(double, monkeypatch, caplog):
    no_hook = triton.Config({"BLOCK": 32}, num_warps=1, num_stages=1)  # equal to CONFIGS[1] but for the pre_hook
    monkeypatch.setattr(double, "configs", [*CONFIGS, no_hook])
    with caplog.at_level("WARNING", logger=autotune.__name__):
        assert autotune.replay({"double": [_entry([1], block=32)]}) == 0
    assert "2 of them match: alike but for their pre_hook" in caplog.text and double.cache == {}


_GOOD = _entry([7])  # first in each record below: validation must come before any seeding


def _config(**change):
    return {**_entry([1])["config"], **change}


@pytest.mark.parametrize(("choices", "message"), [
    ([], "must be an object of kernel name"),
    ({"double": {}}, "choices of kernel 'double' must be a list"),
    ({"double": [_GOOD, {"key": [1]}]}, "choice 1 of kernel 'double' must be an object with exactly 'key' and"),
    ({"double": [_GOOD, {**_entry([1]), "key": [{"n": 1}]}]}, "'key' must be a list of JSON scalars"),
    ({"double": [_GOOD, {**_entry([1]), "key": 1}]}, "'key' must be a list of JSON scalars"),
    ({"double": [_GOOD, {"key": [1], "config": {"kwargs": {}}}]}, "'config' must be an object with exactly 'kwargs'"),
    ({"double": [_GOOD, {"key": [1], "config": _config(kwargs=[16])}]}, "'config.kwargs' must be an object of JSON"),
    ({"double": [_GOOD, {"key": [1], "config": _config(num_warps="1")}]}, "'config.num_warps' must be an integer; got"),
    ({"double": [_GOOD, {"key": [1], "config": _config(num_stages=True)}]}, "'config.num_stages' must be an integer"),
    ({"double": [_GOOD, {"key": [1], "config": _config(maxnreg=1.5)}]}, "'config.maxnreg' must be an integer or null"),
])
def test_a_malformed_record_raises_and_seeds_nothing(double, choices, message):
    with pytest.raises(ValueError, match=message):
        autotune.replay(choices)
    assert double.cache == {}


def test_replay_seeds_the_ksa_kernels_own_config_with_its_pre_hook():
    from recfx.kernels import ksa_prefill

    tuner = ksa_prefill._ksa_prefill_kernel
    config = tuner.configs[0]
    key = (128, 8, 1, 2, 1, 13, True, False, "torch.bfloat16")  # shaped like the kernel's keys; not tuned here
    record = {"ksa_prefill": [{"key": list(key), "config": autotune._config_record(config)}]}
    try:
        assert autotune.replay(_through_json(record)) == 1
        assert tuner.cache[key] is config and config.pre_hook is not None
    finally:
        tuner.cache.pop(key, None)


@pytest.mark.parametrize("name", sorted(autotune.KERNELS))
def test_the_table_names_autotuned_kernels(name):
    tuner = autotune._autotuner(name)
    assert tuner.keys and tuner.configs and isinstance(tuner.cache, dict)
    assert all(key in tuner.arg_names for key in tuner.keys)


def test_record_imports_no_kernel_and_no_triton(monkeypatch):
    monkeypatch.setitem(autotune.KERNELS, "ghost", ("recfx.kernels.no_such_module", "_kernel"))
    autotune.record()
    assert "recfx.kernels.no_such_module" not in sys.modules

    code = ("import sys, recfx; from recfx.kernels import autotune; r = autotune.record(); "
            "print(r, [m for m in ('triton', *(m for m, _ in autotune.KERNELS.values())) if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["{}", "[]"]


def test_module_docstring_example():
    import doctest

    result = doctest.testmod(autotune)
    assert result.attempted > 0 and result.failed == 0
