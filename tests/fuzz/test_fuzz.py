"""The random-graph fuzzer in CI: a fixed slice of seeds per backend (``make fuzz N=...`` runs more), and tests that
the generator and the checker themselves can tell right from wrong."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

import recfx
from recfx.errors import PassError
from tests.fuzz import checker
from tests.fuzz.checker import BACKENDS, check, compare, reproduction
from tests.fuzz.generator import generate

#: Seeds per backend in CI, chosen for ~2.5 minutes in all on 2 CPU cores (Inductor ~15 s a model, ONNX export ~3 s,
#: eager < 1 s); different ranges so that CI sees more distinct models.
SLICE = {
    "eager": range(0, 40),
    "eager-fp8": range(40, 80),
    "ort": range(80, 88),
    "ort-fp8": range(88, 96),
    "inductor": range(96, 99),
    "cuda-fp8-passes-fp8": range(0, 60),  # ~0.4 s a model; seeds 4 and 48 chain two quantized linears
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_slice(backend: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RECFX_CACHE_DIR", str(tmp_path))
    failures = []
    outcomes: collections.Counter[str] = collections.Counter()
    for seed in SLICE[backend]:
        fm = generate(seed)
        result = check(fm, backend)
        outcomes[result.outcome] += 1
        if result.failed:
            failures.append(reproduction(fm, result))
    assert not failures, f"{len(failures)} failing models ({dict(outcomes)}):\n\n" + "\n\n".join(failures)
    assert outcomes["match"] >= len(SLICE[backend]) // 2, f"most models should compile and match: {dict(outcomes)}"


def test_generator_is_deterministic_and_runs() -> None:
    a, b = generate(7), generate(7)
    assert a.source == b.source and a.source != generate(8).source
    for name, value in a.module.state_dict().items():
        assert torch.equal(value, b.module.state_dict()[name]), name
    with torch.no_grad():
        out = a.module(*a.inputs(3, 0))
    assert all(t.shape[0] == 3 for t in checker._flat(out) if t.dim())


def test_generator_covers_the_op_list() -> None:
    seen = collections.Counter(op.split(".")[0] for seed in range(150) for op in set(generate(seed).ops))
    wanted = {"linear", "matmul", "bmm", "residual", "norm", "softmax", "activation", "heads", "permute", "reshape",
              "contiguous", "transpose", "cat", "split", "chunk", "embedding", "slice", "inplace", "constant",
              "repeat", "dead", "masked_fill", "where", "sdpa", "reduce", "out", "gated"}
    assert wanted <= set(seen), f"never generated: {sorted(wanted - set(seen))}"


def test_compare_tolerances() -> None:
    torch.manual_seed(0)
    ref = torch.randn(4, 8, dtype=torch.float64)
    own = ref.float()
    assert compare(ref.float(), ref, own, fp8=False)[0] is None
    wrong = ref.float().clone()
    wrong[1, 2] += 0.01  # one element off by 1% of the scale
    assert "max |err|" in compare(wrong, ref, own, fp8=False)[0]
    assert "shape" in compare(ref.float().T, ref, own, fp8=False)[0]
    assert "dtype" in compare(ref.half(), ref, own, fp8=False)[0]
    # FP8: E4M3-sized noise (~3% relative) passes; a sign flip of a quarter of the elements does not
    noisy = (ref * (1 + 0.03 * torch.randn_like(ref))).float()
    why, sqnr = compare(noisy, ref, own, fp8=True)
    assert why is None and sqnr is not None and sqnr > 20
    flipped = ref.float().clone()
    flipped[:1] *= -1
    assert "SQNR" in compare(flipped, ref, own, fp8=True)[0]
    inf_ref = ref.clone()
    inf_ref[0, 0] = float("-inf")
    assert compare(inf_ref.float(), inf_ref, inf_ref.float(), fp8=False)[0] is None
    assert "non-finite" in compare(ref.float(), inf_ref, own, fp8=False)[0]


_REAL_COMPILE = recfx.compile


def _patched_compile(monkeypatch: pytest.MonkeyPatch, wrap) -> None:  # type: ignore[no-untyped-def]
    def fake(model, inputs, backend="eager", **kw):  # type: ignore[no-untyped-def]
        return wrap(_REAL_COMPILE(model, inputs, backend=backend, **kw))

    monkeypatch.setattr(recfx, "compile", fake)


def test_checker_catches_wrong_numbers_crashes_and_accepts_refusals(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fm = generate(3)
    assert check(fm, "eager").outcome == "match"

    _patched_compile(monkeypatch, lambda c: lambda *a: [t * 1.001 if t.is_floating_point() else t
                                                        for t in checker._flat(c(*a))])
    bad = check(fm, "eager")
    assert bad.outcome == "mismatch" and bad.failed
    text = reproduction(fm, bad)
    assert "fuzz seed 3" in text and "--seed 3 --backends eager" in text and "class Model" in text

    def crash(c):  # type: ignore[no-untyped-def]
        raise IndexError("internal bug")

    _patched_compile(monkeypatch, crash)
    assert check(fm, "eager").outcome == "crash"

    def refuse(c):  # type: ignore[no-untyped-def]
        raise PassError("cannot lower this graph: ...")

    _patched_compile(monkeypatch, refuse)
    assert check(fm, "eager").outcome == "refused"

    def wrapped_bug(c):  # type: ignore[no-untyped-def]
        try:
            raise KeyError("a pass's own bug")
        except KeyError as err:
            raise PassError("pass 'cse' failed: KeyError: ...") from err

    _patched_compile(monkeypatch, wrapped_bug)
    assert check(fm, "eager").outcome == "crash"


def test_checker_catches_an_input_written_by_the_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fm = generate(3)

    def writes(c):  # type: ignore[no-untyped-def]
        def run(*a):  # type: ignore[no-untyped-def]
            out = c(*a)
            a[0].add_(1.0)
            return out
        return run

    _patched_compile(monkeypatch, writes)
    result = check(fm, "eager")
    assert result.outcome == "mismatch" and "modified its inputs" in result.detail


def test_shrink_keeps_the_failure_and_drops_lines(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fm = generate(11)
    _patched_compile(monkeypatch, lambda c: lambda *a: [torch.zeros_like(t) for t in checker._flat(c(*a))])
    result = check(fm, "eager")
    assert result.outcome == "mismatch"
    small = checker.shrink(fm, result, fm.with_source, budget=12)
    assert len(small.splitlines()) < len(fm.source.splitlines())
    assert check(dataclasses.replace(fm.with_source(small)), "eager").outcome == "mismatch"


def test_static_scales_are_calibrated_on_the_checked_inputs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 569 (static per-tensor): a checked batch has a value past the amax of the two calibration batches of its
    own, and the saturated element costs more than rounding; that tests calibration coverage, not the lowering."""
    fm = generate(569)
    assert check(fm, "eager-fp8").outcome == "match"
    real = checker.quant_for
    monkeypatch.setattr(checker, "quant_for", lambda fm: (real(fm)[0], real(fm)[1][:2]))  # the old calibration
    result = check(fm, "eager-fp8")
    assert result.outcome == "mismatch" and "FP8: SQNR" in result.detail  # saturation is not excused as ill-conditioned


def test_ill_conditioned_fp8_output_is_told_apart(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seed 849: masked_fill(..., 1e4) feeds a quantized linear whose output reaches a softmax; with 1e2 the same
    program is well-conditioned at FP8 precision, matches, and a wrong result on it is still a mismatch."""
    fm = generate(849)
    result = check(fm, "eager-fp8")
    assert result.outcome == "ill-conditioned" and not result.failed and "output 1" in result.detail
    tame = fm.with_source(fm.source.replace("1e4", "1e2"))
    assert check(tame, "eager-fp8").outcome == "match"
    class WrongScale:
        def __init__(self, compiled) -> None:  # type: ignore[no-untyped-def]
            self.compiled, self.report = compiled, compiled.report

        def __call__(self, *args):  # type: ignore[no-untyped-def]
            return [t * 0.8 if t.is_floating_point() else t for t in checker._flat(self.compiled(*args))]

    _patched_compile(monkeypatch, WrongScale)
    assert check(tame, "eager-fp8").outcome == "mismatch"
