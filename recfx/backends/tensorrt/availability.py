"""Whether TensorRT and Torch-TensorRT can run here, and what to install when they cannot.

``tensorrt-stubs`` (installed for type checking) puts a ``tensorrt`` folder holding only ``.pyi`` files on the path:
``import tensorrt`` then succeeds as an empty namespace package. So availability asks for the real library's
``Builder`` class, never just for an importable name.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

from recfx.backends.base import Availability

#: What a user installs to get the backends (TensorRT 10.x from NVIDIA's index; Torch-TensorRT matching torch).
INSTALL_HINT = ("pip install tensorrt torch-tensorrt (TensorRT >= 10.8 from NVIDIA's package index, Torch-TensorRT "
                "built for this torch version)")


def tensorrt_availability() -> Availability:
    """The TensorRT Python library itself (``tensorrt.Builder``): what ``recfx build-engine`` and plan runners need."""
    if importlib.util.find_spec("tensorrt") is None:
        return Availability(False, f"TensorRT is not installed ({INSTALL_HINT})")
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as err:  # the package is there but its shared libraries are not
        return Availability(False, f"TensorRT is installed but does not load ({err}); {INSTALL_HINT}")
    if not hasattr(trt, "Builder"):
        return Availability(False, "only TensorRT's type stubs are installed (tensorrt-stubs), not TensorRT itself; "
                                   f"{INSTALL_HINT}")
    return Availability(True)


def torch_tensorrt_availability() -> Availability:
    """TensorRT, Torch-TensorRT and a CUDA GPU: what the in-process ``trt`` / ``trt-fp8`` backends need."""
    trt = tensorrt_availability()
    if not trt.ok:
        return trt
    if importlib.util.find_spec("torch_tensorrt") is None:
        return Availability(False, f"Torch-TensorRT is not installed ({INSTALL_HINT})")
    try:
        importlib.import_module("torch_tensorrt")
    except Exception as err:  # noqa: BLE001 - Torch-TensorRT raises plain Exception when TensorRT does not match
        return Availability(False, f"Torch-TensorRT is installed but does not import ({err}); {INSTALL_HINT}")
    if not torch.cuda.is_available():
        return Availability(False, "TensorRT needs a CUDA GPU; none is visible to torch")
    return Availability(True)
