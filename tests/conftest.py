"""Test-wide settings: invariant checks on, Triton's interpreter without a GPU, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("RECFX_DEBUG", "1")  # lint + stage invariants after every pass
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before any Triton kernel is defined
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)  # one thread per xdist worker: workers already use every core
except ImportError:  # torch missing: the collection error below says what to install
    pass

import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
