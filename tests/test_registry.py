import pytest

from recfx.errors import UnknownKeyError
from recfx.registry import Registry


def test_register_get_and_list():
    reg: Registry[int] = Registry("thing")

    @reg.register("one")
    def one():
        return 1

    reg.add("two", 2)
    assert reg.get("one") is one
    assert reg.names() == ["one", "two"]
    assert "two" in reg and "three" not in reg


def test_duplicate_raises():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_unknown_lists_known_and_close_matches():
    reg: Registry[int] = Registry("backend")
    reg.add("inductor", 1)
    reg.add("eager", 0)
    with pytest.raises(UnknownKeyError) as info:
        reg.get("indcutor")
    text = str(info.value)
    assert "unknown backend 'indcutor'" in text and "eager, inductor" in text and "Did you mean 'inductor'" in text
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
