"""The compile cache: ``recfx.compile(..., cache_dir=...)`` (or ``$RECFX_COMPILE_CACHE``) stores bundles by key.

The key is a SHA-256 of everything the compiled code depends on: the captured graph's code, every tensor it holds
(weights, buffers, constants: name, dtype, shape, bytes), the input specs, the compile config (less its dump
settings), the quantization config and calibration data, the backend, the recfx / torch / triton versions and the
device (GPU compute capability, CPU vector ISA). A hit loads the bundle (its checks included) instead of running
the passes and the backend. Entries are written with :func:`recfx.runtime.bundle.atomic_folder`, so two processes
that compile the same key at once both finish and the cache keeps one complete entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from recfx.frontend.capture import CapturedGraph
from recfx.runtime.bundle import BundleError, _versions, device_record, load_bundle
from recfx.runtime.compiled import CompiledModule

log = logging.getLogger(__name__)

#: the environment variable that turns the compile cache on for every ``recfx.compile`` without ``cache_dir``
CACHE_ENV = "RECFX_COMPILE_CACHE"
#: compile-config fields that do not change the compiled code
_NOT_KEYED = ("dump_after", "dump_dir", "dump_format")


def cache_dir_from(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """``cache_dir`` when given, else ``$RECFX_COMPILE_CACHE`` when set, else ``None`` (no cache)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else None


def _tensor(digest: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def cache_key(captured: CapturedGraph, config: dict[str, Any], quant: dict[str, Any] | None,
              calibration: Iterable[Any] | None, backend: str) -> str:
    """The cache key (hex SHA-256) of compiling ``captured`` with these settings on this machine."""
    gm = captured.graph_module
    digest = hashlib.sha256()
    digest.update(gm.code.encode())
    for target in sorted({str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}):
        value: Any = gm
        for part in target.split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):
            _tensor(digest, target, value)
    for i, batch in enumerate(calibration or ()):
        for j, t in enumerate(torch.utils._pytree.tree_leaves(batch)):
            if isinstance(t, torch.Tensor):
                _tensor(digest, f"calibration.{i}.{j}", t)
    devices = sorted({str(s.device) for s in captured.input_specs if s.device is not None}) or ["cpu"]
    meta = {"inputs": [str(s) for s in captured.input_specs], "outputs": [str(s) for s in captured.output_specs],
            "config": {k: v for k, v in config.items() if k not in _NOT_KEYED}, "quant": quant, "backend": backend,
            "versions": _versions(), "devices": [device_record(torch.device(d)) for d in devices]}
    digest.update(json.dumps(meta, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:40]


def lookup(cache_dir: Path, key: str, device: torch.device | None = None) -> CompiledModule | None:
    """The cached module for ``key`` loaded onto ``device`` (default: the entry's), or ``None``. A damaged entry is
    moved aside (and logged), never run."""
    path = entry_path(cache_dir, key)
    if not path.is_dir():
        return None
    try:
        return load_bundle(path, device)
    except BundleError as exc:
        log.warning("compile cache entry %s is unusable (%s); compiling again", path, exc)
        _discard(path)
        return None


def store(module: CompiledModule, cache_dir: Path, key: str) -> Path | None:
    """Save ``module`` as the entry for ``key``; returns its path, or ``None`` when its backend cannot be bundled
    (logged as a warning: the module still works, it is just not cached)."""
    path = entry_path(cache_dir, key)
    try:
        module.save(path)
    except FileExistsError:  # another process stored the same key first
        log.info("compile cache entry %s already exists", path)
    except BundleError as exc:
        log.warning("not caching the %s module: %s", module.backend, exc)
        return None
    return path


def _discard(path: Path) -> None:
    """Move ``path`` aside atomically (so a concurrent reader never sees half of it), then delete it."""
    aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".bad"))
    with contextlib.suppress(OSError):  # another process moved it first
        os.replace(path, aside / "entry")
    shutil.rmtree(aside, ignore_errors=True)
