"""Import every module of a package so that their registration decorators run (backends, passes, ops, tools)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def import_submodules(package: ModuleType, *, skip: frozenset[str] = frozenset()) -> None:
    """Import ``package``'s direct submodules and subpackages whose names do not start with ``_``."""
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package.__name__}.{info.name}")
