"""Cache keys of TensorRT artifacts (plain functions): a plan depends on the ONNX bytes, the profiles, the build
options and the TensorRT version; engines are not portable across TensorRT versions or GPU architectures.

Example:
    >>> a = engine_key("ab" * 32, [{"name": "p0", "shapes": {}}], {"optimization_level": 3}, "10.13", (9, 0))
    >>> a == engine_key("ab" * 32, [{"name": "p0", "shapes": {}}], {"optimization_level": 4}, "10.13", (9, 0))
    False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from recfx.backends.tensorrt.ksa_plugin import ONNX_PLUGIN_ID, QDP_VERSION


def engine_key(onnx_sha256: str, profiles: Sequence[Mapping[str, Any]], options: Mapping[str, Any],
               trt_version: str, capability: tuple[int, int]) -> str:
    """SHA-256 over what a plan depends on; any change gives another key.

    Raises:
        ValueError: ``onnx_sha256`` is not a hex SHA-256 digest.
    """
    if len(onnx_sha256) != 64 or any(c not in "0123456789abcdef" for c in onnx_sha256):
        raise ValueError(f"onnx_sha256 must be a lowercase hex SHA-256 digest, got {onnx_sha256!r}")
    record = {"onnx": onnx_sha256, "profiles": list(profiles), "options": dict(options), "tensorrt": trt_version,
              "sm": list(capability), "plugins": {ONNX_PLUGIN_ID: QDP_VERSION}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def plugin_manifest(profiles: Sequence[Mapping[str, Any]], key: str, plan_sha256: str) -> dict[str, Any]:
    """What is written beside a plan: its key, its bytes' digest, the plugins it needs and its profiles."""
    return {"key": key, "sha256": plan_sha256, "plugins": [{"id": ONNX_PLUGIN_ID, "version": QDP_VERSION}],
            "profiles": list(profiles)}
