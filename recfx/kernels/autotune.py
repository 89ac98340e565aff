"""The Triton autotuner choices of recfx's own kernels, as JSON: recorded when a bundle is saved, replayed when it is
loaded.

Why: a ``triton.autotune``d kernel times its configs the first time it sees a key and keeps the fastest. In the
process that loads a bundle the kernels (called back from the AOTInductor package through recfx's custom ops) would
tune again, by timing, and could pick another config: another tile shape, so another summation order and outputs
that differ from the compiling process's in the last bits; and the first call would pay the tuning. Replaying the
compiling process's choices gives bit-identical outputs across processes and no tuning on the first call after a
load, for every key the compiling process tuned (keys it never saw are tuned as before).

The choices are per Triton version (the config lists and what they compile to may change): bundles for CUDA are
refused under another triton by ``check_compatible`` already. A choice whose config is no longer among the kernel's
configs is skipped with a warning, never approximated. :func:`record` holds every choice this process made for these
kernels, not only those of one model.

This module imports neither Triton nor the kernel modules to record: a kernel that was never imported was never tuned.

    >>> sorted(KERNELS)
    ['fp8_attention', 'fp8_block_gemm', 'ksa_prefill']
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["KERNELS", "record", "replay"]

#: kernel name (as stored in a bundle) -> (module, attribute of its ``triton.autotune`` object)
KERNELS: dict[str, tuple[str, str]] = {
    "ksa_prefill": ("recfx.kernels.ksa_prefill", "_ksa_prefill_kernel"),
    "fp8_attention": ("recfx.kernels.fp8_attention", "_fp8_attention_kernel"),
    "fp8_block_gemm": ("recfx.kernels.fp8_block_gemm", "_fp8_block_gemm_kernel"),
}
#: the launch settings of a ``triton.Config`` that a record holds beside its ``kwargs`` (int, or None for maxnreg)
_SETTINGS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
_SCALARS = (int, float, str, bool, type(None))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _SCALARS)


def _config_record(config: Any) -> dict[str, Any]:
    """A ``triton.Config`` as JSON values: its kwargs and launch settings (its pre_hook stays with the kernel)."""
    return {"kwargs": dict(config.kwargs), **{name: getattr(config, name, None) for name in _SETTINGS}}


def _canonical(config_record: dict[str, Any]) -> str | None:
    """``config_record`` as sorted JSON, the form two configs are compared in (strict: ``True`` is not ``1``), or
    None when it holds values that are not JSON scalars."""
    if not all(_is_scalar(v) for v in config_record["kwargs"].values()):
        return None
    return json.dumps(config_record, sort_keys=True)


def _autotuner(name: str) -> Any:
    module_name, attribute = KERNELS[name]
    tuner = getattr(importlib.import_module(module_name), attribute)
    assert hasattr(tuner, "cache") and hasattr(tuner, "configs"), f"{module_name}.{attribute} is not autotuned"
    return tuner


def record() -> dict[str, list[dict[str, Any]]]:
    """The autotuner choices this process made for :data:`KERNELS`, as JSON values.

    Only kernels whose module is already imported are read (nothing else can have tuned). Keys holding values that
    are not JSON scalars are left out (they could not be told apart after a round trip), so are configs whose kwargs
    are not. Entries are sorted by the JSON of their key, so that one process's record is written alike every time.

    Returns:
        ``{kernel name: [{"key": [...], "config": {"kwargs": {...}, "num_warps": .., "num_stages": ..,
        "num_ctas": .., "maxnreg": ..}}, ...]}``; kernels without choices are absent (``{}``: nothing was tuned).
    """
    choices: dict[str, list[dict[str, Any]]] = {}
    for name, (module_name, attribute) in KERNELS.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        entries = []
        for key, config in getattr(module, attribute).cache.items():
            config_record = _config_record(config)
            if not all(_is_scalar(v) for v in key) or _canonical(config_record) is None:
                log.debug("autotune record: %s key %r or its config %s is not plain JSON; not recorded", name, key,
                          config)
                continue
            entry = {"key": list(key), "config": config_record}
            try:  # what replay would refuse as damaged is not written (e.g. a config without num_warps)
                _check_entry(name, entry)
            except ValueError as exc:
                log.warning("autotune record: %s choice not recorded (%s)", name, exc)
                continue
            entries.append(entry)
        if entries:
            choices[name] = sorted(entries, key=lambda entry: json.dumps(entry["key"]))
    return choices


def _check_entry(where: str, entry: Any) -> None:
    """Raise ValueError naming ``where`` when ``entry`` is not ``{"key": [scalars], "config": {...}}``."""
    if not isinstance(entry, dict) or set(entry) != {"key", "config"}:
        raise ValueError(f"{where} must be an object with exactly 'key' and 'config'; got {entry!r:.200}")
    key, config = entry["key"], entry["config"]
    if not isinstance(key, list) or not all(_is_scalar(v) for v in key):
        raise ValueError(f"{where}: 'key' must be a list of JSON scalars; got {key!r:.200}")
    if not isinstance(config, dict) or set(config) != {"kwargs", *_SETTINGS}:
        raise ValueError(f"{where}: 'config' must be an object with exactly 'kwargs', {', '.join(_SETTINGS)}; got "
                         f"{config!r:.200}")
    kwargs = config["kwargs"]
    if not isinstance(kwargs, dict) or not all(_is_scalar(v) for v in kwargs.values()):
        raise ValueError(f"{where}: 'config.kwargs' must be an object of JSON scalars; got {kwargs!r:.200}")
    for name in _SETTINGS:
        value = config[name]
        allowed = "an integer or null" if name == "maxnreg" else "an integer"
        if not (type(value) is int or (value is None and name == "maxnreg")):
            raise ValueError(f"{where}: 'config.{name}' must be {allowed}; got {value!r:.200}")


def _validate(choices: Any) -> None:
    """Check the whole record before anything is seeded, so that a malformed one changes no cache."""
    if not isinstance(choices, dict):
        raise ValueError(f"autotune choices must be an object of kernel name -> list of entries; got "
                         f"{type(choices).__name__}")
    for name, entries in choices.items():
        if not isinstance(entries, list):
            raise ValueError(f"autotune choices of kernel {name!r} must be a list of entries; got "
                             f"{type(entries).__name__}")
        if name in KERNELS:  # a newer recfx's kernels are skipped: their entries are its business
            for index, entry in enumerate(entries):
                _check_entry(f"autotune choice {index} of kernel {name!r}", entry)


def replay(choices: Any) -> int:
    """Seed the autotuner caches of :data:`KERNELS` with ``choices`` (from :func:`record`, through JSON).

    Each choice's config must be one of the kernel's own ``configs``, equal in kwargs and launch settings: that
    object is what is seeded (configs carry pre_hooks, such as the KSA kernel's TMA box setup). A key this process
    has tuned already keeps its own choice. Keys are seeded as tuples, as ``Autotuner.run`` builds them (the values
    of the named ``key`` arguments, then ``str(dtype)`` of each argument with a dtype), so a replayed key is a hit.

    Skipped with a warning, since bundles outlive recfx versions: a kernel this recfx does not know (a newer recfx
    may have more), and a choice whose config is not among the kernel's configs (its config list changed).

    Args:
        choices: ``{kernel name: [{"key": [...], "config": {...}}, ...]}``, as :func:`record` returns it.

    Returns:
        How many keys were seeded.

    Raises:
        ValueError: ``choices`` is not shaped as :func:`record` writes it (the message names the entry); no cache is
            changed then.
    """
    _validate(choices)
    seeded = 0
    for name, entries in choices.items():
        if name not in KERNELS:
            log.warning("autotune choices for kernel %r skipped: this recfx has no such autotuned kernel (known: %s)",
                        name, ", ".join(sorted(KERNELS)))
            continue
        if not entries:
            continue
        tuner = _autotuner(name)
        configs: dict[str, list[Any]] = {}
        for config in tuner.configs:
            canonical = _canonical(_config_record(config))
            if canonical is not None:
                configs.setdefault(canonical, []).append(config)
        for entry in entries:
            key = tuple(entry["key"])
            if key in tuner.cache:
                continue
            matches = configs.get(json.dumps(entry["config"], sort_keys=True), [])
            if len(matches) != 1:
                why = ("the config list changed" if not matches else
                       f"{len(matches)} of them match: alike but for their pre_hook, they cannot be told apart")
                log.warning("autotune choice for kernel %r key %s skipped: its config %s is %s of the kernel's %d "
                            "configs (%s); that key is tuned again when first seen", name, key, entry["config"],
                            "none" if not matches else "not one", len(tuner.configs), why)
                continue
            tuner.cache[key] = matches[0]
            seeded += 1
    return seeded
