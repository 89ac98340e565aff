"""What recfx records in an ONNX file's ``metadata_props`` (all values are strings; structured ones are JSON).

Keys: ``recfx.version``, ``recfx.model``, ``recfx.backend`` (the backend whose graph was exported),
``recfx.precision`` (``fp32``/``fp8``), ``recfx.quant_config`` (JSON or ``none``), ``recfx.calibration_hash``
(``sha256:...`` of the calibration batches, or ``none``), ``recfx.export_config`` (JSON), ``recfx.plugins`` (JSON
list of TensorRT plugin op types), ``recfx.inputs`` / ``recfx.outputs`` (JSON lists of ``name: dtype[dims]``).

Example:
    >>> calibration_hash([(torch.zeros(2, 3),)])[:7]
    'sha256:'
    >>> calibration_hash(None)
    'none'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch

from recfx._version import __version__

PREFIX = "recfx."


def calibration_hash(batches: Iterable[Any] | None) -> str:
    """A digest of calibration data (every tensor's dtype, shape and bytes, in order), or ``"none"``.

    Only re-iterable collections are hashed (lists/tuples of batches); a one-shot iterator would be consumed, so
    it gives ``"unhashed (iterator)"``.
    """
    if batches is None:
        return "none"
    if not isinstance(batches, (list, tuple)):
        return "unhashed (iterator)"
    digest = hashlib.sha256()
    for batch in batches:
        for t in torch.utils._pytree.tree_leaves(batch):
            if isinstance(t, torch.Tensor):
                digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
                digest.update(tensor_bytes(t))
    return "sha256:" + digest.hexdigest()


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor's elements in row-major order (any shape, 0-d included, any dtype)."""
    flat = t.detach().cpu().reshape(-1)  # 1-d: ``view(torch.uint8)`` refuses 0-d tensors of wider dtypes
    return flat.contiguous().view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def config_json(config: Any) -> str:
    """A config as JSON: ``ConfigBase.to_dict()``, a dict, or ``"none"``."""
    if config is None:
        return "none"
    data = config.to_dict() if hasattr(config, "to_dict") else config
    return json.dumps(data, sort_keys=True, default=str)


def build_metadata(*, model: str, backend: str, fp8: bool, quant: Any, calibration: str, export_config: Any,
                   plugins: Sequence[str], inputs: Sequence[Any], outputs: Sequence[Any]) -> dict[str, str]:
    """The ``metadata_props`` recfx writes (see the module docstring)."""
    return {
        f"{PREFIX}version": __version__,
        f"{PREFIX}model": model,
        f"{PREFIX}backend": backend,
        f"{PREFIX}precision": "fp8" if fp8 else "fp32",
        f"{PREFIX}quant_config": config_json(quant),
        f"{PREFIX}calibration_hash": calibration,
        f"{PREFIX}export_config": config_json(export_config),
        f"{PREFIX}plugins": json.dumps(list(plugins)),
        f"{PREFIX}inputs": json.dumps([str(s) for s in inputs]),
        f"{PREFIX}outputs": json.dumps([str(s) for s in outputs]),
    }


def read_metadata(model: str | Path | onnx.ModelProto) -> dict[str, str]:
    """The ``recfx.*`` metadata of an ONNX file or model (without loading external weights).

    Raises:
        FileNotFoundError: no such file.
    """
    if not isinstance(model, onnx.ModelProto):
        if not Path(model).is_file():
            raise FileNotFoundError(f"no ONNX file at {model}")
        model = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
