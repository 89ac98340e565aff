"""Helpers of the serving tests: the PyTriton gate, free loopback ports, Triton clients for recfx models."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

SERVE_REASON = ("PyTriton (the serve extra) is not installed here: it pins numpy<2, so it lives in .venv-serve "
                "(`make serve-venv`); `make test` runs tests/serving there with RECFX_REQUIRE_SERVE=1")


def require_serve() -> None:
    """Skip the calling test module without PyTriton, or fail when RECFX_REQUIRE_SERVE=1 (CI's serve run)."""
    if importlib.util.find_spec("pytriton") is not None and importlib.util.find_spec("tritonclient") is not None:
        return
    if os.environ.get("RECFX_REQUIRE_SERVE") == "1":
        raise RuntimeError("RECFX_REQUIRE_SERVE=1 but PyTriton/tritonclient are not importable: " + SERVE_REASON)
    pytest.skip(SERVE_REASON, allow_module_level=True)


TRITON_DTYPE = {torch.float32: "FP32", torch.int64: "INT64", torch.int32: "INT32", torch.float16: "FP16"}


def infer_inputs(client_module: object, names: list[str], tensors: tuple[torch.Tensor, ...]) -> list[object]:
    """``InferInput``s of ``tritonclient.http`` or ``tritonclient.grpc`` holding ``tensors``."""
    out = []
    for name, t in zip(names, tensors):
        i = client_module.InferInput(name, list(t.shape), TRITON_DTYPE[t.dtype])  # type: ignore[attr-defined]
        i.set_data_from_numpy(np.ascontiguousarray(t.numpy()))
        out.append(i)
    return out
