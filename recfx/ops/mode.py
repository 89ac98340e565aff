"""Which implementation recfx's ops run: their custom kernels (default) or their PyTorch reference.

The ``eager`` backends are the reference: they run the graph with :func:`reference_kernels` active, so an op such as
``recfx::ksa_attention`` runs its reference implementation even on a GPU where a Triton kernel exists. The GPU
backends run the kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("recfx_reference_kernels", default=False)


@contextlib.contextmanager
def reference_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside this block recfx ops run their PyTorch reference instead of custom kernels.

    Example:
        >>> from recfx.ops.mode import reference_kernels, use_reference
        >>> with reference_kernels():
        ...     use_reference()
        True
        >>> use_reference()
        False
    """
    token = _REFERENCE.set(enabled)
    try:
        yield
    finally:
        _REFERENCE.reset(token)


def use_reference() -> bool:
    """True inside :func:`reference_kernels`: ops must take their reference path."""
    return _REFERENCE.get()
