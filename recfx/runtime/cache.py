"""The compile cache: ``recfx.compile(..., cache_dir=...)`` (or ``$RECFX_COMPILE_CACHE``) stores bundles by key.

The key is a SHA-256 of everything the compiled code depends on: the captured graph's code, every tensor it holds
(weights, buffers, constants: name, dtype, shape, bytes), the input specs, the compile config (less its dump
settings), the quantization config and calibration data, the backend, the recfx / torch / triton versions and the
device (GPU compute capability; for CPU code the host's architecture, cpuid features and vector lengths and the
settings Inductor's ISA choice reads), and a digest of recfx's own source files, so that editing a pass
invalidates the cache.
A hit loads the bundle (its checks included) instead of running the passes and the backend. Entries are written with
:func:`recfx.runtime.bundle.atomic_folder`, so two processes that compile the same key at once both finish and the
cache keeps one complete entry.

Capturing the model for that key can cost a good part of a compile. So an index maps a *fingerprint* of the call,
computed without tracing, to the graph key of a previous compile: the model's weights and buffers (bytes), its
module tree (class, module path and every plain attribute of each submodule), the source of the packages its
classes come from (every ``.py`` file of the package; the version of an installed one), the example inputs' shapes
and dtypes, and the same configs, versions, device and recfx source. A fingerprint found in the index loads its
entry without capturing. A model whose attributes do not print stably (``repr`` with an address), that has hooks,
or whose classes have no source file (defined interactively) gets no fingerprint and always takes the
captured-graph path. Code a model calls in *another* package that is not installed (a helper in a sibling folder)
is not in the fingerprint: clear the cache's ``index`` folder after editing such code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from recfx.frontend.capture import CapturedGraph
from recfx.runtime.bundle import BundleError, _versions, device_key, load_bundle
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


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib")]


def _package_source(name: str) -> str | None:
    """A digest of the source of module ``name``'s top-level package (every ``.py`` file under it; the module's own
    file when the package is not importable as such, e.g. a test folder), its version when it is installed in the
    Python installation, or ``None`` when it has no source file (an interactive session)."""
    top = sys.modules.get(name.split(".")[0])
    module = top if isinstance(getattr(top, "__file__", None), str) else sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or not isinstance(file, str):
        return None
    if any(Path(file).resolve().is_relative_to(root) for root in _installed_roots()):
        return f"{module.__name__}=={getattr(module, '__version__', '?')}"
    folders = [Path(p) for p in getattr(module, "__path__", [])]
    files = sorted(str(f) for folder in folders for f in folder.rglob("*.py")) if folders else [file]
    return _files_digest(tuple(files))


def source_digest(modules: Iterable[str] = ()) -> str | None:
    """A digest of recfx's own source and of the packages of ``modules`` (module names), so that editing a pass or
    a model changes the key; ``None`` when one of them has no source file."""
    parts = []
    for name in sorted({"recfx", *modules}):
        part = _package_source(name)
        if part is None:
            return None
        parts.append(f"{name}:{part}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.lru_cache(maxsize=64)
def _files_digest_cached(files: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.encode())
        with contextlib.suppress(OSError):
            digest.update(Path(f).read_bytes())
    return digest.hexdigest()


def _files_digest(files: tuple[str, ...]) -> str:
    stamps = []
    for f in files:
        try:
            st = os.stat(f)
            stamps.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamps.append((0, 0))
    return _files_digest_cached(files, tuple(stamps))


def _settings(config: dict[str, Any], quant: dict[str, Any] | None, calibration: Iterable[Any] | None,
              backend: str, devices: list[str], digest: Any, source: str | None) -> dict[str, Any]:
    for i, batch in enumerate(calibration or ()):
        for j, t in enumerate(torch.utils._pytree.tree_leaves(batch)):
            if isinstance(t, torch.Tensor):
                _tensor(digest, f"calibration.{i}.{j}", t)
    return {"config": {k: v for k, v in config.items() if k not in _NOT_KEYED}, "quant": quant, "backend": backend,
            "versions": _versions(), "source": source,
            "devices": [device_key(torch.device(d)) for d in sorted(devices) or ["cpu"]]}


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
    devices = list({str(s.device) for s in captured.input_specs if s.device is not None})
    meta = {"inputs": [str(s) for s in captured.input_specs], "outputs": [str(s) for s in captured.output_specs],
            **_settings(config, quant, calibration, backend, devices, digest, source_digest())}
    digest.update(json.dumps(meta, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))


def fingerprint(model: torch.nn.Module, example_inputs: Any, config: dict[str, Any], quant: dict[str, Any] | None,
                calibration: Iterable[Any] | None, backend: str) -> str | None:
    """A key of the call computed without tracing (see the module docstring), or ``None`` when the model's state
    does not print stably or it has hooks (then only the captured-graph key is used)."""
    digest = hashlib.sha256()
    tree = []
    for name, module in model.named_modules():
        hooks = [k for k in _MODULE_INTERNALS if "hook" in k and getattr(module, k, None)]
        if hooks:
            return None
        attrs = {}
        for key, value in vars(module).items():
            if key in _MODULE_INTERNALS:
                continue
            if isinstance(value, torch.Tensor):
                _tensor(digest, f"{name}.{key}", value)
                continue
            text = repr(value)
            if " at 0x" in text:  # an object without a value repr: no stable fingerprint
                return None
            attrs[key] = text
        cls = type(module)
        tree.append([name, cls.__module__, cls.__qualname__, attrs])
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        _tensor(digest, name, t)
    leaves = torch.utils._pytree.tree_leaves(example_inputs)
    inputs = [[str(x.dtype), list(x.shape), str(x.device)] if isinstance(x, torch.Tensor) else repr(x)
              for x in leaves]
    devices = list({str(x.device) for x in leaves if isinstance(x, torch.Tensor)})
    source = source_digest({row[1] for row in tree if row[1].split(".")[0] != "torch"})
    if source is None:
        return None
    meta = {"tree": tree, "inputs": inputs, **_settings(config, quant, calibration, backend, devices, digest, source)}
    digest.update(json.dumps(meta, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _index_path(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / "index" / fingerprint[:40]


def lookup_fingerprint(cache_dir: Path, fingerprint: str | None,
                       device: torch.device | None = None) -> CompiledModule | None:
    """The cached module a previous compile recorded for ``fingerprint``, or ``None``."""
    if fingerprint is None:
        return None
    index = _index_path(cache_dir, fingerprint)
    try:
        key = index.read_text().strip()
    except OSError:
        return None
    return lookup(cache_dir, key, device)


def record_fingerprint(cache_dir: Path, fingerprint: str | None, key: str) -> None:
    """Remember (atomically) that ``fingerprint`` compiles to the entry ``key``."""
    if fingerprint is None:
        return
    from recfx._io import atomic_write_text

    index = _index_path(cache_dir, fingerprint)
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, key)


def entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:40]


def lookup(cache_dir: Path, key: str, device: torch.device | None = None) -> CompiledModule | None:
    """The cached module for ``key`` loaded onto ``device`` (default: the entry's), or ``None``. A damaged entry is
    moved aside (and logged), never run."""
    path = entry_path(cache_dir, key)
    if len(key) != 64 or not path.is_dir():  # the index holds full keys
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
