"""Backends behind one registry. Importing this package registers the built-in ones."""

from recfx.backends import eager, inductor  # noqa: F401  (registration)
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
