"""Test helpers for FP8 ops and kernels: an independent float64 reference of E4M3 rounding, opcheck.

SQNR is :func:`recfx.analysis.numerics.sqnr_db`.

Other backends' kernels (Triton, TensorRT plugins) are checked against the same references.
"""

from __future__ import annotations

import doctest
from typing import Any

import numpy as np
import torch

FP8 = torch.float8_e4m3fn


def e4m3_table() -> tuple[np.ndarray, np.ndarray]:
    """All finite non-negative E4M3 values (float64, ascending) and their codes (bit patterns 0x00..0x7E)."""
    codes = np.arange(0x7F, dtype=np.uint8)
    values = torch.from_numpy(codes).view(FP8).double().numpy()
    return values, codes


def reference_codes(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Float64 reference of ``saturate(round_half_even(x / scale))`` as E4M3 bit patterns (uint8).

    Rounds by searching the table of E4M3 values (no torch rounding involved); ties go to the even code.

    Example:
        >>> reference_codes(np.array([1.0, 1000.0]), np.array(1.0)).tolist()
        [56, 126]
    """
    values, codes = e4m3_table()
    v = x.astype(np.float64) / scale.astype(np.float64)
    mag = np.minimum(np.abs(v), 448.0)
    hi = np.clip(np.searchsorted(values, mag), 0, len(values) - 1)  # first grid value >= mag
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - values[lo], values[hi] - mag
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (codes[hi] % 2 == 0))
    code = np.where(pick_hi, codes[hi], codes[lo])
    return (code | np.where(np.signbit(v), 0x80, 0)).astype(np.uint8)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    view = (lambda t: t.view(torch.uint8)) if a.dtype == FP8 else (lambda t: t)
    return torch.equal(view(a), view(b))


def opcheck_fp8(op: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
    """``torch.library.opcheck`` that also works for ops with float8 inputs.

    opcheck's schema test compares inputs with ``allclose``, which float8 tensors do not implement; for such ops it
    is replaced by a bitwise check that no input was mutated. The other tests (fake tensor, autograd registration,
    AOT dispatch with dynamic shapes) run unchanged.
    """
    kwargs = kwargs or {}
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    tests: tuple[str, ...] = ("test_schema", "test_autograd_registration", "test_faketensor",
                              "test_aot_dispatch_dynamic")
    if any(t.dtype == FP8 for t in tensors):
        tests = tests[1:]
        before = [t.clone() for t in tensors]
        op(*args, **kwargs)
        if not all(_same(b, a) for b, a in zip(before, tensors)):
            raise AssertionError(f"{op} mutated one of its inputs")
    torch.library.opcheck(op, args, kwargs, test_utils=tests)


def run_examples(objs: list[Any], module: Any) -> None:
    """Run the ``>>>`` examples of custom ops (doctest cannot find them on ``CustomOpDef``) and of ``module``."""
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for obj in objs:
        fn = getattr(obj, "_init_fn", obj)
        test = parser.get_doctest(fn.__doc__ or "", dict(vars(module)), fn.__name__, None, 0)
        if not test.examples:
            raise AssertionError(f"{fn.__name__} has no example")
        if runner.run(test).failed:
            raise AssertionError(f"the docstring example of {fn.__name__} failed")
    if doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed:
        raise AssertionError(f"a docstring example in {module.__name__} failed")
