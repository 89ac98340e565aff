"""The examples in the docstrings of recfx.bench and the doctor command run and hold."""

import doctest
import importlib

import pytest

MODULES = ["recfx.bench", "recfx.bench.stats", "recfx.bench.timing", "recfx.bench.accuracy", "recfx.bench.plan",
           "recfx.bench.runner", "recfx.bench.compare", "recfx.bench.env", "recfx.tools.doctor"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, raise_on_error=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
