"""The public-architecture corpus (tests/models/corpus.py) compiled on every backend, with golden counts.

CI runs a slice (one or two backends per model, ~1 minute); the whole matrix runs with ``make corpus``
(``RECFX_CORPUS=all``), which also prints nothing more than these assertions: the table in the docs comes from
``python tests/models/corpus.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from recfx.models.ksa_mask import ksa_mask


def _load_corpus():  # type: ignore[no-untyped-def]
    """tests/models/corpus.py, loaded by path (tests are not a package under --import-mode=importlib)."""
    spec = importlib.util.spec_from_file_location("recfx_test_corpus", Path(__file__).with_name("corpus.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()
BACKENDS, CORPUS, Entry, evaluate, ksa_allowed = (corpus.BACKENDS, corpus.CORPUS, corpus.Entry, corpus.evaluate,
                                                  corpus.ksa_allowed)

FULL = os.environ.get("RECFX_CORPUS") == "all"
#: what CI runs: (model, backend)
CI_SLICE = {("ksa-sdpa", "eager"), ("ksa-sdpa", "eager-fp8"), ("jagged-rec", "ort"), ("jagged-rec", "eager-fp8"),
            ("dlrm-bag", "eager-fp8"), ("llama-sdpa", "eager-fp8"), ("gpt2-eager", "eager-fp8"),
            ("llama-sdpa", "cuda-fp8-passes-fp8"), ("gpt2-eager", "cuda-fp8-passes-fp8")}
#: the least cosine each backend must reach against the float model (FP8: E4M3 weights and per-token activations)
MIN_COSINE = {"eager": 0.99999, "inductor": 0.99999, "ort": 0.99999, "onnx": 0.99999, "eager-fp8": 0.999,
              "ort-fp8": 0.999, "cuda-fp8-passes-fp8": 0.999}


def _params(variants: dict[str, Any], ci_slice: set[tuple[str, Any]]) -> list[object]:
    """One case per corpus model and variant (``{id suffix: value}``), skipped outside ``ci_slice`` (unless
    RECFX_CORPUS=all) or without the model's package."""
    cases = []
    for name, entry in CORPUS.items():
        for suffix, value in variants.items():
            marks = []
            if (name, value) not in ci_slice and not FULL:
                marks.append(pytest.mark.skip(reason="outside the CI slice: RECFX_CORPUS=all (make corpus)"))
            if entry.needs and importlib.util.find_spec(entry.needs) is None:
                marks.append(pytest.mark.skip(reason=f"needs {entry.needs}"))
            cases.append(pytest.param(entry, value, id=f"{name}-{suffix}", marks=marks))
    return cases


def _cases() -> list[object]:
    return _params({b: b for b in BACKENDS}, CI_SLICE)


@pytest.mark.parametrize("entry,backend", _cases())
def test_corpus(entry, backend: str) -> None:  # type: ignore[no-untyped-def]
    """Compiles, matches the original model on a batch of another size, and reaches the golden counts."""
    row = evaluate(entry, backend)
    assert row.ok, row.error
    assert row.cosine is not None and row.cosine >= MIN_COSINE[backend], row
    if backend in ("eager", "inductor", "ort", "onnx"):
        assert row.max_abs_err is not None and row.max_abs_err <= 1e-4, row
    if backend != "onnx":
        assert row.ksa_fused == entry.ksa_fused, row  # every KSA layer fused, the full layer kept
    if backend.endswith("fp8"):
        assert row.gemms == entry.gemms, row  # (weight GEMMs found, quantized by the default policy)


def test_ksa_mask_of_the_corpus_is_the_spec_mask() -> None:
    """The corpus writes KSA's mask from the rule itself; it is the spec's mask (so fusing it is right)."""
    for n in (5, 24, 37):
        assert torch.equal(ksa_allowed(n, 4, 1, 2, torch.device("cpu")), ksa_mask(n, 4, 1, 2))


#: the strict TensorRT-rules lint of the corpus runs with ``make corpus`` (14 exports, ~5 minutes on 2 busy cores); CI
#: lints onerec-tiny and ksa-tiny strictly (tests/onnx/test_trt_lint_strict.py), the plugin node included
LINT_CI_SLICE: set[tuple[str, bool]] = set()


def _lint_cases() -> list[object]:
    return _params({"fp32": False, "fp8": True}, LINT_CI_SLICE)


@pytest.mark.parametrize("entry,fp8", _lint_cases())
def test_corpus_onnx_passes_the_tensorrt_lint_strictly(entry, fp8: bool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ONNX file handed to TensorRT (KSA as the plugin node, FP8 as Q/DQ) breaks none of TensorRT's rules."""
    import recfx
    from recfx.onnx import OnnxExportConfig, export_onnx

    torch.manual_seed(0)
    model, inputs = entry.build().eval(), entry.inputs(2, 0)
    quant = {"quant": recfx.QuantConfig(progress=False, eval_batches=1)} if fp8 else {}
    compiled = recfx.compile(model, inputs, backend="eager-fp8" if fp8 else "eager",
                             config=recfx.CompileConfig(dynamic_dims=entry.dynamic_dims), **quant)
    written = export_onnx(compiled, inputs, tmp_path / f"{entry.name}.onnx",
                          OnnxExportConfig(fp8=fp8, lint="strict", model_name=entry.name))
    assert written.lint is not None and written.lint.ok, written.lint
    assert written.fp8 == fp8
    assert len(written.plugins) == (1 if entry.ksa_fused else 0), written.plugins  # one plugin op type: KsaAttention
