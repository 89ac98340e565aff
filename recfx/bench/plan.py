"""Which backends a bench run compiles: ``auto``/``auto-fp8`` expanded, the unavailable ones skipped with the reason
(never silently dropped), duplicates listed once; an unknown name is an error (a typo must not pass as a skip)."""

from __future__ import annotations

import dataclasses
import difflib

from recfx.backends import AUTO_NAMES, BACKENDS, resolve_backend
from recfx.errors import BackendUnavailableError, UnknownKeyError


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """One requested backend name and what the run does with it.

    Attributes:
        requested: the name as given (``auto-fp8``, ``trt-fp8``...).
        backend: the registered backend it resolves to (``None`` when unknown or when ``auto`` found none).
        runnable: ``True`` when it will be compiled and timed; otherwise ``reason`` says why not.
        reason: why it was skipped, or for ``auto`` names which backend was picked and why.
    """

    requested: str
    backend: str | None
    runnable: bool
    reason: str = ""

    @property
    def label(self) -> str:
        """``eager`` or ``auto-fp8 → eager-fp8``: what the table shows."""
        if self.backend is None or self.backend == self.requested:
            return self.requested
        return f"{self.requested} → {self.backend}"


def plan_backends(requested: list[str] | tuple[str, ...]) -> list[BackendChoice]:
    """Resolve each requested name; the order is kept (the first runnable one is the speedup baseline).

    Args:
        requested: backend names, ``auto`` or ``auto-fp8``.

    Returns:
        One :class:`BackendChoice` per requested name.

    Raises:
        ValueError: an empty list or an empty name.
        UnknownKeyError: a name that is neither registered nor ``auto``/``auto-fp8`` (with close matches).

    Example:
        >>> [c.runnable for c in plan_backends(["eager", "auto"])]
        [True, True]
        >>> plan_backends(["eagr"])
        Traceback (most recent call last):
        ...
        recfx.errors.UnknownKeyError: unknown backend 'eagr'. Did you mean 'eager' or 'eager-fp8'? ...
    """
    if not requested or any(not name for name in requested):
        raise ValueError(f"give at least one backend name (registered: {', '.join(BACKENDS.names())}, "
                         f"or {' / '.join(AUTO_NAMES)}), got {list(requested)!r}")
    known = [*BACKENDS.names(), *AUTO_NAMES]
    for name in requested:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UnknownKeyError(f"unknown backend {name!r}.{hint} Registered: {', '.join(BACKENDS.names())}, "
                                  f"or {' / '.join(AUTO_NAMES)} (`recfx list backends` shows which run here)")
    choices: list[BackendChoice] = []
    seen: dict[str, str] = {}  # backend -> the requested name that runs it
    for name in requested:
        choice = _resolve(name)
        if choice.runnable and choice.backend in seen:
            choice = dataclasses.replace(choice, runnable=False, reason=(
                f"{choice.reason + '; ' if choice.reason else ''}same backend as {seen[choice.backend]!r}, "
                "benchmarked once"))
        elif choice.runnable:
            assert choice.backend is not None
            seen[choice.backend] = name
        choices.append(choice)
    return choices


def _resolve(name: str) -> BackendChoice:
    if name in AUTO_NAMES:
        want_fp8 = name == "auto-fp8"
        if not any(BACKENDS.get(n).fp8 == want_fp8 for n in BACKENDS.names()):
            return BackendChoice(name, None, False, f"no {'FP8' if want_fp8 else 'non-FP8'} backend is registered "
                                                    f"in this build; registered: {', '.join(BACKENDS.names())}")
        try:
            backend, why = resolve_backend(name)
        except BackendUnavailableError as err:
            return BackendChoice(name, None, False, str(err))
        return BackendChoice(name, backend.name, True, why)
    availability = BACKENDS.get(name)().availability()
    if not availability.ok:
        return BackendChoice(name, name, False, f"not available here: {availability.reason}")
    return BackendChoice(name, name, True)
