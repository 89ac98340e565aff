"""The examples in the docstrings of the TensorRT modules that need no TensorRT run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["partition", "profiles", "ksa_shapes", "cache"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"recfx.backends.tensorrt.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
