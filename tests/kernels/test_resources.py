"""The KSA prefill kernel still compiles for sm_90 (Triton's bundled ptxas, no GPU): TMA and pointer paths, and
the variant that starts from a dense summary prefix.

CPU tests otherwise run kernels under the interpreter, which never invokes the compiler; this catches code that
interprets fine but does not build for the GPU. It runs in a subprocess without TRITON_INTERPRET.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")


def test_prefill_kernel_builds_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "recfx.kernels.resources", "--config", "64,64,4,3,tma", "--config", "128,64,8,3,ptr",
         "--config", "64,64,4,2,tma,dense"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"\s+\d+\s+\d+", line)]
    assert len(rows) == 3
    for row in rows:
        registers, stack, shared = (int(x) for x in row.split("|")[1].split())
        assert 0 < registers <= 255 and shared > 0
        assert stack < 4096  # spills stay bounded (bytes per thread); the table is in docs/ksa.md


def test_resources_refuses_the_interpreter() -> None:
    result = subprocess.run([sys.executable, "-m", "recfx.kernels.resources", "--config", "64,64,4,3,tma"],
                            capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=120,
                            check=False)
    assert result.returncode == 2 and "TRITON_INTERPRET" in result.stderr
