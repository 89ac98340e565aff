"""recfx's Inductor heuristics: whole-row (persistent) reductions for rows up to ``persistent_rows`` elements."""

from __future__ import annotations

import types

import pytest
import sympy
import torch

import recfx
from recfx.backends.inductor import (
    PERSISTENT_ROWS,
    WithHeuristics,
    _wide_row_choices,
    inductor_heuristics,
    keyed_options,
    persistent_any_layout,
    persistent_rows,
)


def _decide(rows: int, numel: object, hint_name: str = "INNER", any_layout: bool = False) -> bool:
    """The persistent-reduction decision for a kernel reducing ``numel`` elements per row, under ``rows``."""
    from torch._inductor.runtime.hints import ReductionHint
    from torch._inductor.sizevars import SizeVarAllocator
    from torch._inductor.virtualized import V

    features = types.SimpleNamespace(get_reduction_hint=lambda: getattr(ReductionHint, hint_name),
                                     reduction_numel=sympy.sympify(numel), numel=sympy.Integer(4096))
    graph = types.SimpleNamespace(sizevars=SizeVarAllocator())
    with V.set_graph_handler(graph), inductor_heuristics(rows, any_layout=any_layout):
        return bool(V.choices.should_use_persistent_reduction(features, False))


@pytest.mark.parametrize("numel,want", [(512, True), (2048, True), (5632, True), (8192, True), (8193, False)])
def test_rows_up_to_the_limit_are_persistent(numel: int, want: bool) -> None:
    assert _decide(PERSISTENT_ROWS, numel) is want


def test_inductor_default_is_kept_with_zero_and_outside_the_context() -> None:
    assert _decide(0, 1024) and not _decide(0, 2048)  # Inductor's own limit for contiguous rows: 1,024
    from torch._inductor.choices import InductorChoices
    from torch._inductor.virtualized import V

    with inductor_heuristics(PERSISTENT_ROWS):
        assert V.choices is _wide_row_choices(PERSISTENT_ROWS, False)
    assert V.choices is not _wide_row_choices(PERSISTENT_ROWS, False) and isinstance(V.choices, InductorChoices)


def test_a_compiled_call_runs_under_the_heuristics() -> None:
    """torch.compile compiles at a call (the first, or a new shape): the handler must be in place then."""
    from torch._inductor.virtualized import V

    seen = WithHeuristics(lambda: V.choices, 2048)()
    assert seen is _wide_row_choices(2048, False)
    assert WithHeuristics(lambda: V.choices, 0)() is not _wide_row_choices(2048, False)


def test_only_contiguous_rows_are_widened() -> None:
    assert not _decide(PERSISTENT_ROWS, 2048, "DEFAULT") and not _decide(PERSISTENT_ROWS, 2048, "OUTER")


def test_any_layout_widens_rows_without_a_hint_too_but_never_columns() -> None:
    assert _decide(PERSISTENT_ROWS, 2048, "DEFAULT", any_layout=True)
    assert not _decide(PERSISTENT_ROWS, 8193, "DEFAULT", any_layout=True)
    assert not _decide(PERSISTENT_ROWS, 2048, "OUTER", any_layout=True)
    # a row length known only within wide bounds keeps Inductor's rule for rows without a hint (looped)
    assert not _decide(PERSISTENT_ROWS, sympy.Symbol("r0", positive=True, integer=True), "DEFAULT", any_layout=True)
    assert _wide_row_choices(PERSISTENT_ROWS, True) is not _wide_row_choices(PERSISTENT_ROWS, False)
    # Inductor's caches key on the setting: a graph compiled under one is not served under the other
    keys = {keyed_options(None, PERSISTENT_ROWS, any_layout=a)["post_grad_custom_post_pass"].uuid() for a in (0, 1)}
    assert len(keys) == 2


@pytest.mark.parametrize("bad", ["ANY", True, 1, None])
def test_bad_layout_option_is_a_clear_error(bad: object) -> None:
    assert persistent_any_layout({}) is False and persistent_any_layout({"persistent_layout": "any"}) is True
    with pytest.raises(ValueError, match="persistent_layout.*'contiguous' or 'any'"):
        persistent_any_layout({"persistent_layout": bad})


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8192", 16385])
def test_bad_option_is_a_clear_error(bad: object) -> None:
    with pytest.raises(ValueError, match="persistent_rows"):
        persistent_rows({"persistent_rows": bad})


def test_compiled_module_runs_under_the_option() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.LayerNorm(32)).eval()
    x = torch.randn(4, 16)
    want = model(x)
    for rows in (0, 4096):
        fast = recfx.compile(model, (x,), backend="inductor",
                             config=recfx.CompileConfig(backend_options={"persistent_rows": rows}))
        torch.testing.assert_close(fast(x), want, rtol=1e-5, atol=1e-5)


def test_inductor_cache_keys_on_the_limit(tmp_path, monkeypatch) -> None:
    """A graph compiled under one limit is not served from Inductor's cache under another (same graph, same
    process); the same limit again is a hit."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Softmax(-1)).eval()
    x = torch.randn(3, 8)
    outcomes = []
    for rows in (8192, 0, 4096, 8192):
        torch._dynamo.reset()
        before = dict(counters["inductor"])
        recfx.compile(model, (x,), backend="inductor",
                      config=recfx.CompileConfig(check_numerics=False, backend_options={"persistent_rows": rows}))(x)
        after = counters["inductor"]
        outcomes.append("hit" if after["fxgraph_cache_hit"] > before.get("fxgraph_cache_hit", 0) else "miss")
    assert outcomes == ["miss", "miss", "miss", "hit"]


def test_aoti_bundles_compile_under_the_same_heuristics(tmp_path, monkeypatch) -> None:
    from torch._inductor.virtualized import V

    from recfx.runtime import bundle_formats

    seen = {}

    def fake_package(ep, package_path, inductor_configs=None):
        seen["choices"], seen["configs"] = V.choices, inductor_configs

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fake_package)
    ep = torch.export.export(torch.nn.Linear(4, 4), (torch.randn(2, 4),))
    bundle_formats.write_aoti(ep, tmp_path, 4096)
    assert seen["choices"] is _wide_row_choices(4096, False)
    assert seen["configs"]["post_grad_custom_post_pass"].uuid() == "recfx-persistent-rows-4096"
    bundle_formats.write_aoti(ep, tmp_path, 4096, any_layout=True)
    assert seen["choices"] is _wide_row_choices(4096, True)
    assert seen["configs"]["post_grad_custom_post_pass"].uuid() == "recfx-persistent-rows-4096-any"


def test_the_layout_option_reaches_the_compile_and_the_bundle(tmp_path, monkeypatch) -> None:
    """``persistent_layout='any'`` is in force when the in-process module compiles (at its calls) and when its
    bundle is packaged."""
    from torch._inductor.virtualized import V

    import recfx.backends.inductor as inductor
    from recfx.runtime import bundle_formats

    seen: list = []

    def fake_compile(gm, backend=None, dynamic=None, options=None, **kw):
        def run(*args):
            seen.append((V.choices, options["post_grad_custom_post_pass"].uuid()))
            return gm(*args)
        return run

    monkeypatch.setattr(inductor.torch, "compile", fake_compile)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Softmax(-1)).eval()
    x = torch.randn(3, 8)
    compiled = recfx.compile(model, (x,), backend="inductor", config=recfx.CompileConfig(
        check_numerics=False, backend_options={"persistent_layout": "any"}))
    compiled(x)
    assert seen and all(c is _wide_row_choices(PERSISTENT_ROWS, True) and key.endswith("-any") for c, key in seen)

    packaged = {}

    def fake_write(ep, folder, rows=0, *, any_layout=False):
        packaged.update(rows=rows, any_layout=any_layout)
        (folder / bundle_formats.FILES[bundle_formats.AOTI]).write_bytes(b"")

    monkeypatch.setattr(bundle_formats, "write_aoti", fake_write)
    compiled.save(tmp_path / "b")
    assert packaged == {"rows": PERSISTENT_ROWS, "any_layout": True}


def test_each_backend_has_its_layout_default() -> None:
    """``cuda-fp8`` widens rows of any layout by default (measured faster), the bf16 ``inductor`` only contiguous
    rows; the user's option wins on both."""
    from recfx.backends.base import get_backend

    assert get_backend("inductor").heuristics({}) == (PERSISTENT_ROWS, False)
    assert get_backend("cuda-fp8").heuristics({}) == (PERSISTENT_ROWS, True)
    assert get_backend("cuda-fp8").heuristics({"persistent_layout": "contiguous"}) == (PERSISTENT_ROWS, False)
    assert get_backend("inductor").heuristics({"persistent_layout": "any", "persistent_rows": 0}) == (0, True)


def test_a_mode_is_keyed_in_inductor_caches_too(monkeypatch) -> None:
    """``backend_options={"mode": ...}`` reaches ``torch.compile`` as the options that mode sets, with the cache-key
    pass added: a graph compiled under one row limit or layout is not served under another with a mode either."""
    import recfx.backends.inductor as inductor

    calls: list = []

    def fake_compile(gm, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw)
        return gm

    monkeypatch.setattr(inductor.torch, "compile", fake_compile)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Softmax(-1)).eval()
    x = torch.randn(3, 8)
    recfx.compile(model, (x,), backend="inductor", config=recfx.CompileConfig(
        check_numerics=False, backend_options={"mode": "max-autotune-no-cudagraphs"}))
    (kw,) = calls
    assert "mode" not in kw and kw["options"]["max_autotune"] is True
    assert kw["options"]["post_grad_custom_post_pass"].uuid() == keyed_options(
        None, PERSISTENT_ROWS)["post_grad_custom_post_pass"].uuid()
    with pytest.raises(ValueError, match="'mode' or 'options', not both"):
        recfx.compile(model, (x,), backend="inductor", config=recfx.CompileConfig(
            check_numerics=False, backend_options={"mode": "default", "options": {}}))
