"""The built-in FP8 granularity descriptors: their eager quantize -> dequantize, and the docs' copy of the registry.

FP8 E4M3 keeps 3 mantissa bits: a round trip of Gaussian data is about 31 dB (relative step 2**-4, uniform error);
the threshold is 28 dB. Per-tensor is slightly worse on a matrix whose rows differ in scale, hence the row scaling.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch

import recfx  # noqa: F401  (registers the ops and the built-in granularities)
from recfx.analysis.numerics import sqnr_db
from recfx.ops.fp8 import quantize_weight, scale_from_amax
from recfx.ops.fp8_terms import (
    ACTIVATION_MODES,
    EAGER,
    WEIGHT_GRANULARITIES,
    activation_mode,
    granularity_table,
    weight_granularity,
)

MIN_SQNR_DB = 28.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fp8.md"


@pytest.mark.parametrize("name", list(WEIGHT_GRANULARITIES))
def test_weight_granularity_round_trip(name: str) -> None:
    torch.manual_seed(0)
    g = weight_granularity(name)
    w = torch.randn(80, 200) * torch.linspace(0.5, 2.0, 80)[:, None]  # 200 = 3 blocks of 64 + a partial one
    w_q, w_s = quantize_weight(w, name, 64)
    w_hat = g.dequantize(EAGER, w_q, w_s, 64, torch.float64)
    assert w_hat.shape == w.shape and w_hat.dtype == torch.float64
    assert sqnr_db(w.double(), w_hat) >= MIN_SQNR_DB
    assert torch.equal(w_s, g.scales(w, 64))  # quantize_weight uses the descriptor's scale rule, unchanged


@pytest.mark.parametrize("name", list(ACTIVATION_MODES))
def test_activation_mode_fake_quant(name: str) -> None:
    torch.manual_seed(0)
    mode = activation_mode(name)
    x = torch.randn(3, 5, 200)
    scale = scale_from_amax(x.abs().amax()) if mode.calibrated else None
    x_hat = mode.fake_quant(EAGER, x, scale, 64, torch.float64)
    assert x_hat.shape == x.shape and x_hat.dtype == torch.float64
    assert sqnr_db(x.double(), x_hat) >= MIN_SQNR_DB


def test_docs_list_the_registered_granularities() -> None:
    text = DOCS.read_text()
    found = re.search(r"<!-- granularity-table -->\n(.*?)\n<!-- /granularity-table -->", text, re.S)
    assert found, "docs/fp8.md lost its <!-- granularity-table --> markers"
    assert found.group(1) == granularity_table(), (
        "docs/fp8.md's granularity table differs from the registry: paste recfx.ops.fp8_terms.granularity_table()")


@pytest.mark.parametrize("name", ["recfx.ops.fp8_terms", "recfx.ops.fp8_granularities", "recfx.ops.fp8",
                                  "recfx.passes.quant.config"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_registered_gemm_is_an_fp8_op() -> None:
    """``is_fp8_op`` reads the GEMM registry: a GEMM registered later is FP8 for the exporter and the annotator."""
    from recfx.ops.fp8_terms import FP8_GEMMS, FP8_LINEAR, Fp8Gemm, is_fp8_op, register_gemm

    @torch.library.custom_op("recfx::fp8_test_gemm", mutates_args=())
    def fp8_test_gemm(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    op = torch.ops.recfx.fp8_test_gemm.default
    assert not is_fp8_op(op)
    register_gemm(Fp8Gemm("fp8_test_gemm", FP8_LINEAR.arguments, scaled_mm="test"))
    try:
        assert is_fp8_op(op)
    finally:
        FP8_GEMMS.remove("fp8_test_gemm")
    assert not is_fp8_op(op) and is_fp8_op(torch.ops.recfx.fp8_linear.default)
