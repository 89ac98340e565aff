"""Backends behind one registry. Importing this package registers the built-in ones (every module here)."""

import sys as _sys

from recfx._plugins import import_submodules as _import_submodules
from recfx.backends.base import (
    AUTO_NAMES,
    BACKENDS,
    Availability,
    Backend,
    available_backends,
    backend_status,
    get_backend,
    register_backend,
    resolve_backend,
)

__all__ = [
    "AUTO_NAMES", "BACKENDS", "Availability", "Backend", "available_backends", "backend_status", "get_backend",
    "register_backend", "resolve_backend",
]

_import_submodules(_sys.modules[__name__])
