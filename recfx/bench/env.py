"""What this machine has: library versions, GPUs, ONNX Runtime providers, TensorRT (for bench results and doctor)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from typing import Any

import torch

from recfx._version import __version__

OPTIONAL = ("triton", "onnx", "onnxscript", "onnxruntime", "tensorrt", "numpy", "networkx", "matplotlib", "rich")


def package_version(module: str) -> tuple[str | None, str]:
    """``(version, note)`` of an importable module; ``(None, why)`` when it is missing or fails to import.

    A folder without ``__init__.py`` (a namespace package, e.g. what ``tensorrt-stubs`` leaves: only ``.pyi``
    files) is not the library.
    """
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None, "not installed"
    if spec.origin is None:
        return None, "not installed (only type stubs or an empty namespace folder)"
    try:
        mod = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001  (any import failure is reported, not raised)
        return None, f"installed but fails to import: {type(err).__name__}: {err}"
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown version"
    return str(version), ""


def gpus() -> list[dict[str, Any]]:
    """Name, compute capability and memory of each CUDA GPU torch sees (empty without CUDA)."""
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count})
    return out


def onnxruntime_providers() -> list[str] | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def environment() -> dict[str, Any]:
    """A JSON-friendly description of the software and hardware, stored with every bench result.

    Example:
        >>> env = environment()
        >>> env["torch"] == torch.__version__
        True
    """
    versions = {}
    notes = {}
    for module in OPTIONAL:
        version, note = package_version(module)
        versions[module] = version
        if note:
            notes[module] = note
    return {
        "recfx": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": gpus(),
        "cxx_compiler": next((shutil.which(cc) for cc in ("g++", "c++", "clang++") if shutil.which(cc)), None),
        "versions": versions,
        "notes": notes,
        "onnxruntime_providers": onnxruntime_providers(),
    }
