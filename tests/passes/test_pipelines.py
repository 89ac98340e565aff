"""recfx/passes/pipelines.py: every default pass list in one place; every declared stage has passes."""

import doctest

import pytest

from recfx.backends import BACKENDS
from recfx.passes import PASSES, STAGES, PassContext, pipelines
from recfx.passes.pipelines import CANONICAL_PASSES, DEFAULT_FUSIONS, FP8_PASSES, SCALED_MM_LOWERING

LISTS = {"canonicalize": CANONICAL_PASSES, "quantize": FP8_PASSES, "fuse": DEFAULT_FUSIONS,
         "lower": SCALED_MM_LOWERING}


def test_docstring_example_runs() -> None:
    assert doctest.testmod(pipelines).failed == 0


def test_every_stage_has_a_default_list_of_registered_passes_of_that_stage() -> None:
    assert set(LISTS) == set(STAGES)  # a declared stage without passes fails here
    for stage, names in LISTS.items():
        assert names and len(set(names)) == len(names)
        assert [PASSES.get(n).stage for n in names] == [stage] * len(names)


@pytest.mark.parametrize("name", sorted(BACKENDS.names()))
def test_backend_pipelines_come_from_the_lists_in_stage_order(name: str) -> None:
    backend = BACKENDS.get(name)()
    names = backend.passes(PassContext())
    expected = [*(FP8_PASSES if backend.fp8 else ()), *DEFAULT_FUSIONS, *backend.lowering]
    assert names == expected
    stages = [STAGES.index(PASSES.get(n).stage) for n in names]
    assert stages == sorted(stages)


def test_cuda_fp8_lowers_to_scaled_mm() -> None:
    assert BACKENDS.get("cuda-fp8")().lowering == SCALED_MM_LOWERING
    assert all(BACKENDS.get(n)().lowering == () for n in ("eager", "eager-fp8", "inductor", "inductor-fp8"))
