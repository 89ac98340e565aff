"""recfx/backends/tensorrt/profiles.py: optimisation profiles from captured dynamic dims, and the runtime's check."""

from __future__ import annotations

import pytest

from recfx.backends.tensorrt.profiles import DimRange, derive_profiles, parse_profile, select_profile

INPUTS = [("tokens", ("batch", "seq", 64)), ("lengths", ("batch",)), ("table", (100, 64))]


def test_shared_symbols_get_one_range_and_static_dims_stay() -> None:
    (p,) = derive_profiles(INPUTS, [{"batch": (1, 8, 32), "seq": (16, 128, 512)}])
    assert p.shapes["tokens"] == ((1, 16, 64), (8, 128, 64), (32, 512, 64))
    assert p.shapes["lengths"] == ((1,), (8,), (32,))
    assert p.shapes["table"] == ((100, 64),) * 3


def test_several_profiles_short_and_long_histories() -> None:
    short, long = derive_profiles(INPUTS, [{"seq": (16, 128, 512)}, {"seq": (512, 2048, 8192)}],
                                  examples={"batch": 4}, names=["short", "long"])
    assert short.shapes["tokens"][2] == (16, 512, 64) and long.shapes["tokens"][0] == (1, 512, 64)
    assert short.shapes["lengths"] == ((1,), (4,), (16,))  # from the example: [1, ex, 4 ex]
    profiles = [short, long]
    assert select_profile(profiles, {"tokens": (2, 100, 64), "lengths": (2,), "table": (100, 64)}) == 0
    assert select_profile(profiles, {"tokens": (2, 4000, 64), "lengths": (2,), "table": (100, 64)}) == 1
    with pytest.raises(ValueError, match=r"profile 'short': tokens dim 1 is 9000, outside \[16, 512\]; "
                                         r"profile 'long': tokens dim 1 is 9000, outside \[512, 8192\]"):
        select_profile(profiles, {"tokens": (2, 9000, 64), "lengths": (2,), "table": (100, 64)})


def test_missing_range_unknown_symbol_and_bad_ranges_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"dynamic dim 'seq' has no range; give it as seq=MIN:OPT:MAX"):
        derive_profiles(INPUTS, [{"batch": (1, 2, 4)}])
    with pytest.raises(ValueError, match=r"\['heads'\] are not dynamic dims.*\['batch', 'seq'\]"):
        derive_profiles(INPUTS, [{"heads": (1, 2, 4)}], examples={"batch": 2, "seq": 8})
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        derive_profiles(INPUTS, [{"batch": (4, 2, 8), "seq": (1, 1, 1)}])
    with pytest.raises(ValueError, match="one distinct name per profile"):
        derive_profiles(INPUTS, [{}, {}], examples={"batch": 2, "seq": 8}, names=["a", "a"])


def test_select_profile_checks_rank_and_missing_inputs() -> None:
    (p,) = derive_profiles(INPUTS, [], examples={"batch": 2, "seq": 8})
    with pytest.raises(ValueError, match="tokens has rank 2, expected 3"):
        select_profile([p], {"tokens": (2, 8), "lengths": (2,), "table": (100, 64)})
    with pytest.raises(ValueError, match="input 'table' is missing"):
        select_profile([p], {"tokens": (2, 8, 64), "lengths": (2,)})


def test_parse_profile() -> None:
    assert parse_profile("short@batch=1:8:32,seq=16:128:512") == (
        "short", {"batch": DimRange(1, 8, 32), "seq": DimRange(16, 128, 512)})
    assert parse_profile("seq=1:2:3") == (None, {"seq": DimRange(1, 2, 3)})
    for bad in ("seq=1:2", "seq", "seq=a:b:c", "=1:2:3", "seq=1:2:3,seq=1:2:3"):
        with pytest.raises(ValueError):
            parse_profile(bad)
