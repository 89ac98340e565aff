"""The KSA prefill kernels still compile for sm_90 (Triton's bundled ptxas, no GPU): the Triton kernel's TMA and
pointer paths and its variant that starts from a dense summary prefix, and the Gluon band kernel.

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


def test_gluon_band_kernel_builds_for_sm90() -> None:
    """The Gluon band kernel (ksa_gluon.py) compiles for sm_90 with the installed Triton, and its rings fit one CTA
    per SM (at most 227 KB of shared memory), also in its largest variant; the launcher's estimate of the shared
    memory (which decides whether the summary packs are used) is an upper bound of what the build takes."""
    from recfx.kernels import ksa_gluon

    if ksa_gluon.gluon is None:
        pytest.skip("this Triton has no Gluon")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    shipped = ",".join(str(int(x)) for x in ksa_gluon.DEFAULT_CONFIG)
    result = subprocess.run([sys.executable, "-m", "recfx.kernels.resources", "--band", shipped,
                             "--band", "128,3,1,1,0"],
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"(\s+\d+){5}\s+\|", line)]
    assert len(rows) == 2, result.stdout
    configs = [ksa_gluon.DEFAULT_CONFIG, (128, 3, 1, True, False)]
    for row, config in zip(rows, configs):  # the shipped configuration; one Q buffer and 3 stages (the largest
        # rings; without the summary packs, which would not fit beside them)
        registers, _, shared = (int(x) for x in row.split("|")[1].split())
        assert 0 < registers <= 255 and 0 < shared <= 227 * 1024
        block_n, stages, q_bufs, _, smem = config
        assert shared <= ksa_gluon._shared_bytes(block_n, stages, q_bufs, smem, 8, 128, 2) < shared + 2048


def test_gluon_register_requests_fit_the_cta_pool() -> None:
    """setmaxnreg requests that exceed what the CTA started with never complete (the kernel would hang): the first
    consumer is raised to 256, the others take the configured counts, the producer is padded to a warpgroup."""
    from recfx.kernels.ksa_gluon_kernel import REGS_CONSUMER, REGS_PRODUCER

    pool = 3 * 168  # per thread of one warpgroup: 65536 registers / 384 threads at launch, a multiple of 8
    assert pool >= REGS_CONSUMER + REGS_PRODUCER + 256
    assert REGS_CONSUMER % 8 == 0 and REGS_PRODUCER % 8 == 0 and REGS_PRODUCER >= 24


def test_resources_band_argument_is_checked() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "recfx.kernels.resources", "--band", "128"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 2 and "--band wants bn,stages" in result.stderr


def test_resources_refuses_the_interpreter() -> None:
    result = subprocess.run([sys.executable, "-m", "recfx.kernels.resources", "--config", "64,64,4,3,tma"],
                            capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=120,
                            check=False)
    assert result.returncode == 2 and "TRITON_INTERPRET" in result.stderr
