import pytest
import torch
from torch import nn

import recfx
from recfx.backends import BACKENDS, Availability, Backend, register_backend, resolve_backend
from recfx.errors import BackendUnavailableError, UnknownKeyError


@pytest.fixture
def fake_backends():
    """A high-priority unavailable backend and a low-priority available one, removed after the test."""

    @register_backend("test-missing")
    class Missing(Backend):
        priority = 1000
        description = "needs hardware this machine lacks"

        def availability(self) -> Availability:
            return Availability(False, "no FooAccelerator found")

    yield
    BACKENDS.remove("test-missing")


def test_unknown_backend_lists_known_ones():
    with pytest.raises(UnknownKeyError, match=r"unknown backend 'eagr'.*eager.*inductor.*Did you mean 'eager'"):
        resolve_backend("eagr")


def test_explicit_unavailable_backend_raises_and_never_falls_back(fake_backends):
    with pytest.raises(BackendUnavailableError, match="test-missing.*no FooAccelerator found.*Available backends"):
        recfx.compile(nn.Linear(2, 2).eval(), (torch.randn(2, 2),), backend="test-missing")


def test_auto_skips_unavailable_and_reports_why(fake_backends):
    be, why = resolve_backend("auto")
    assert be.name != "test-missing" and not be.fp8
    assert "skipped test-missing: no FooAccelerator found" in why


def test_auto_picks_highest_priority_available():
    be, _ = resolve_backend("auto")
    best = max((BACKENDS.get(n)() for n in BACKENDS.names()), key=lambda b: (b.availability().ok and not b.fp8,
                                                                            b.priority))
    assert be.name == best.name


def test_register_backend_rejects_non_backends_and_duplicates():
    with pytest.raises(TypeError, match="Backend subclass"):
        register_backend("test-bad")(object)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        register_backend("eager")(type("Dup", (Backend,), {}))


def test_quant_options_need_an_fp8_backend():
    with pytest.raises(ValueError, match="does not quantize"):
        recfx.compile(nn.Linear(2, 2).eval(), (torch.randn(2, 2),), backend="eager", quant=object())
