"""recfx/passes/pipelines.py: every default pass list in one place; every declared stage has passes."""

import doctest

import pytest

from recfx.backends import BACKENDS
from recfx.passes import PASSES, STAGES, PassContext, pipelines
from recfx.passes.pipelines import (
    CANONICAL_PASSES,
    CUDA_FP8_LOWERINGS,
    DEFAULT_FUSIONS,
    FP8_PASSES,
    INDUCTOR_LOWERINGS,
)

LISTS = {"canonicalize": CANONICAL_PASSES, "quantize": FP8_PASSES, "fuse": DEFAULT_FUSIONS,
         "lower": tuple(name for _, name in CUDA_FP8_LOWERINGS)}


def test_docstring_examples_run() -> None:
    assert doctest.testmod(pipelines).attempted >= 2 and doctest.testmod(pipelines).failed == 0


def test_every_stage_has_a_default_list_of_registered_passes_of_that_stage() -> None:
    assert set(LISTS) == set(STAGES)  # a declared stage without passes fails here
    for stage, names in LISTS.items():
        assert names and len(set(names)) == len(names)
        assert [PASSES.get(n).stage for n in names] == [stage] * len(names)
    assert set(INDUCTOR_LOWERINGS) <= set(CUDA_FP8_LOWERINGS)


@pytest.mark.parametrize("options", [{}, {"fold_gqa": False}, {"tiny_attention": False}, {"route_moe": False}])
@pytest.mark.parametrize("name", sorted(BACKENDS.names()))
def test_backend_pipelines_come_from_the_lists_in_stage_order(name: str, options: dict[str, bool]) -> None:
    backend = BACKENDS.get(name)()
    names = backend.passes(PassContext(backend_options=options))
    lowering = [p for option, p in backend.lowering if option is None or options.get(option, True)]
    assert names == [*(FP8_PASSES if backend.fp8 else ()), *DEFAULT_FUSIONS, *lowering]
    stages = [STAGES.index(PASSES.get(n).stage) for n in names]
    assert stages == sorted(stages)


def test_which_backends_lower_what() -> None:
    assert BACKENDS.get("cuda-fp8")().lowering == CUDA_FP8_LOWERINGS
    assert all(BACKENDS.get(n)().lowering == INDUCTOR_LOWERINGS for n in ("inductor", "inductor-fp8"))
    assert all(BACKENDS.get(n)().lowering == () for n in ("eager", "eager-fp8", "ort", "ort-fp8"))
    cuda = BACKENDS.get("cuda-fp8")().passes(PassContext(backend_options={"route_moe": False}))
    assert cuda[-5:] == ["fuse_ksa", "fold_gqa_attention", "lower_tiny_attention", "lower_fp8_attention",
                         "fp8_lower_scaled_mm"]
