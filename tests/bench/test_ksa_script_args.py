"""The argument parsers of the GPU benchmark script ``bench/ksa.py`` (the script itself needs a GPU)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")


def _script():
    path = Path(__file__).resolve().parents[2] / "bench" / "ksa.py"
    spec = importlib.util.spec_from_file_location("bench_ksa", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_shapes_and_variants_parse() -> None:
    ksa = _script()
    assert ksa.sweep_shape("64,64,4,2") == (64, 64, 4, 2)
    assert ksa.sweep_shape("128,64,8,3,PIPE=1,ABL=12") == (128, 64, 8, 3, ("PIPE", 1), ("ABL", 12))
    assert ksa.sweep_variant("tma:dense") == (True, "dense")
    assert ksa.sweep_variant("ptr:kernel") == (False, "kernel")


@pytest.mark.parametrize("text", ["64,64,4", "64,64,4,2,PIPE", "64,x,4,2", "64,64,4,2,PIPE=on"])
def test_bad_sweep_shape_says_the_format(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="BLOCK_M,BLOCK_N,warps,stages"):
        _script().sweep_shape(text)


@pytest.mark.parametrize("text", ["tmaa:dense", "tma", "tma:flex"])
def test_bad_sweep_variant_says_the_format(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="tma\\|ptr:kernel\\|dense"):
        _script().sweep_variant(text)
