"""recfx/bench/plan.py: auto expansion, unknown names refused, skipped reasons for unavailable backends, duplicates."""

import pytest

from recfx.backends import BACKENDS, resolve_backend
from recfx.bench.plan import plan_backends
from recfx.errors import UnknownKeyError


def test_unknown_backend_is_an_error_with_close_matches_and_the_registered_names():
    """A typo must not pass as a 'skipped' row: it is an error naming the close matches and every known name."""
    with pytest.raises(UnknownKeyError, match=r"unknown backend 'indcutor'\. Did you mean 'inductor'") as info:
        plan_backends(["eager", "indcutor"])
    assert all(name in str(info.value) for name in [*BACKENDS.names(), "auto", "auto-fp8"])
    with pytest.raises(UnknownKeyError, match="Did you mean 'auto-fp8'"):
        plan_backends(["auto_fp8"])
    with pytest.raises(UnknownKeyError) as info:
        plan_backends(["xyzzy"])
    assert "Did you mean" not in str(info.value)


def test_unavailable_backend_is_skipped_with_its_reason(fake_backends):
    eager, unavailable = plan_backends(["eager", "test-unavailable"])
    assert eager.runnable and eager.label == "eager"
    assert not unavailable.runnable and "needs a flux capacitor" in unavailable.reason


def test_auto_says_what_it_picked_and_duplicates_run_once():
    picked = resolve_backend("auto")[0].name
    auto, again = plan_backends(["auto", picked])
    assert auto.runnable and auto.backend == picked and auto.label == f"auto → {picked}"
    assert not again.runnable and "benchmarked once" in again.reason


def test_auto_fp8_picks_an_fp8_backend():
    (choice,) = plan_backends(["auto-fp8"])
    if choice.runnable:
        assert BACKENDS.get(choice.backend).fp8 and choice.label.startswith("auto-fp8 → ")
    else:
        assert choice.reason


def test_auto_fp8_without_fp8_backends_says_so(monkeypatch):
    plain = {n: BACKENDS.get(n) for n in BACKENDS.names() if not BACKENDS.get(n).fp8}
    monkeypatch.setattr(BACKENDS, "_items", plain)
    (choice,) = plan_backends(["auto-fp8"])
    assert not choice.runnable and "no FP8 backend is registered" in choice.reason


@pytest.mark.parametrize("bad", [[], [""]])
def test_empty_requests_raise(bad):
    with pytest.raises(ValueError, match="at least one backend"):
        plan_backends(bad)
