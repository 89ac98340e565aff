"""``mypy --disallow-untyped-defs`` over recfx/backends/tensorrt against tensorrt-stubs and Torch-TensorRT's own
sources (``ci/typecheck_trt.py``, also ``make typecheck-trt``): every TensorRT / Torch-TensorRT name and signature
the code uses exists. The script first proves that a wrong TensorRT attribute is caught. Skips (with the reason)
where tensorrt-stubs or Torch-TensorRT's sources are not installed; ``make install`` installs both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "ci" / "typecheck_trt.py"
MISSING = 3


def test_tensorrt_code_typechecks_against_tensorrt_types() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            check=False)
    if result.returncode == MISSING:
        pytest.skip(f"TensorRT type information is not installed: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is clean" in result.stdout
