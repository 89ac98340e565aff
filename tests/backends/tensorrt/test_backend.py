"""The trt / trt-fp8 backends without TensorRT: explicit use raises BackendUnavailableError saying what to install;
auto skips them and says why. (Nothing here runs TensorRT; these tests skip where TensorRT is installed.)"""

from __future__ import annotations

import pytest
import torch

import recfx
from recfx.backends import resolve_backend
from recfx.backends.tensorrt.availability import tensorrt_availability, torch_tensorrt_availability
from recfx.errors import BackendUnavailableError

pytestmark = pytest.mark.skipif(tensorrt_availability().ok, reason="TensorRT is installed here")


@pytest.mark.parametrize("name", ["trt", "trt-fp8"])
def test_explicit_trt_raises_with_what_to_install(name: str) -> None:
    model = torch.nn.Linear(4, 4).eval()
    with pytest.raises(BackendUnavailableError, match=rf"backend '{name}' is not available.*pip install tensorrt"):
        recfx.compile(model, (torch.randn(2, 4),), backend=name)


@pytest.mark.parametrize(("auto", "name"), [("auto", "trt"), ("auto-fp8", "trt-fp8")])
def test_auto_skips_trt_and_says_why(auto: str, name: str) -> None:
    from recfx.backends import BACKENDS, backend_status

    backend, _ = resolve_backend(auto)
    assert backend.name != name
    # never run on TensorRT yet: ranked below the Inductor paths (and cuda-fp8) until a first run
    assert BACKENDS.get(name).priority < BACKENDS.get("inductor").priority
    status = {n: avail for n, avail, _ in backend_status()}
    assert not status[name].ok and status[name].reason == torch_tensorrt_availability().reason


def test_stub_only_install_is_not_taken_for_tensorrt() -> None:
    """tensorrt-stubs makes ``import tensorrt`` succeed as an empty namespace package; that is not TensorRT."""
    import importlib.util

    reason = tensorrt_availability().reason
    if importlib.util.find_spec("tensorrt") is None:
        assert "not installed" in reason
    else:
        assert "only TensorRT's type stubs are installed" in reason or "does not load" in reason
