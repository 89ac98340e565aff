"""Exception types of recfx.

User mistakes raise ``ValueError``/``TypeError`` subclasses so that callers can catch them the usual way;
failures inside the compiler raise :class:`RecfxError` subclasses that name the stage that failed.
"""

from __future__ import annotations


class RecfxError(RuntimeError):
    """Base class of errors raised by the compiler itself (not by bad user input)."""


class CaptureError(RecfxError):
    """``torch.export`` could not capture the model; the message names the operation and its source line."""


class PassError(RecfxError):
    """A graph pass failed or broke an invariant; the message names the pass, the passes before it and the node."""

    def __init__(self, message: str, *, pass_name: str = "", previous: tuple[str, ...] = (), node: str = "") -> None:
        super().__init__(message)
        self.pass_name = pass_name
        self.previous = previous
        self.node = node


class BackendUnavailableError(RecfxError):
    """The requested backend cannot run on this machine (missing library or device)."""


class UnknownKeyError(KeyError, ValueError):
    """A name was looked up in a registry that does not hold it; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else ""
