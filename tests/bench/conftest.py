"""Fake backends for the bench tests: one that cannot run here, one whose compile raises, one that fails at batch 3."""

from __future__ import annotations

import pytest

from recfx.backends import BACKENDS, Availability, Backend, register_backend
from recfx.backends.eager import EagerBackend


class _Unavailable(Backend):
    description = "test backend that never runs"

    def availability(self) -> Availability:
        return Availability(False, "needs a flux capacitor")


class _Broken(EagerBackend):
    def compile(self, gm, ctx):
        raise RuntimeError("boom at compile")


class _FailsAtBatch3(EagerBackend):
    def compile(self, gm, ctx):
        def run(*args):
            if args[0].shape[0] == 3:
                raise RuntimeError("no kernel for batch 3")
            return gm(*args)

        return run


FAKES = {"test-unavailable": _Unavailable, "test-broken": _Broken, "test-fails-at-3": _FailsAtBatch3}


@pytest.fixture
def fake_backends():
    """Register the fake backends for one test, then remove them."""
    for name, cls in FAKES.items():
        register_backend(name)(type(cls.__name__, (cls,), {}))
    yield list(FAKES)
    for name in FAKES:
        BACKENDS.remove(name)


@pytest.fixture(scope="module")
def onerec_micro():
    """A one-layer OneRec registered as ``onerec-micro`` for the sweep tests (compiles in a few seconds)."""
    from recfx.models import (
        MODELS,
        ModelSpec,
        OneRecConfig,
        OneRecModel,
        onerec_inputs,
        register_model,
    )

    cfg = OneRecConfig(d_model=64, n_heads=2, d_head=32, kv_groups=1, kv_layers=1, kv_sets=2, n_layers=1,
                       n_moe_layers=0, d_ff=128, pathway_tokens=(4, 8, 16), pathway_dim=16, vocab=64, beam=8)
    register_model(ModelSpec("onerec-micro", "onerec", cfg, OneRecModel, onerec_inputs))
    yield "onerec-micro"
    MODELS.remove("onerec-micro")


@pytest.fixture(scope="session")
def dlrm_result():
    """A small real result: dlrm-small on eager and a skipped backend (``test-cannot-run``), batches 1 and 4."""
    from recfx.bench import BenchConfig, run_bench

    register_backend("test-cannot-run")(type("_CannotRun", (_Unavailable,), {}))
    try:
        return run_bench(BenchConfig("dlrm-small", backends=("eager", "test-cannot-run"), batches=(1, 4), warmup=1,
                                     iters=5, time_budget=None))
    finally:
        BACKENDS.remove("test-cannot-run")
