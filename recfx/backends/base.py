"""The backend interface and registry.

A backend turns the optimised graph into something callable. It may add passes after canonicalisation (FP8
quantization for ``*-fp8`` names, fusions, lowerings) and says whether it can run on this machine and why not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.fx import GraphModule

from recfx.errors import BackendUnavailableError
from recfx.passes.base import PASSES, PassContext
from recfx.passes.pipelines import DEFAULT_FUSIONS
from recfx.passes.quant import fp8_pipeline
from recfx.registry import Registry

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


class Backend:
    """Base class of backends. Subclasses set the class attributes and implement :meth:`compile`.

    Attributes:
        name: the registry key.
        fp8: run the FP8 quantization passes (``*-fp8`` backends).
        priority: higher is preferred by ``backend="auto"``.
        description: one line for listings.
        lowering: the passes of stage ``lower`` it runs last, as (backend option, pass) pairs (a list of
            ``recfx/passes/pipelines.py``): a pass with an option runs unless ``backend_options[option]`` is False.
    """

    name: ClassVar[str] = ""
    fp8: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    description: ClassVar[str] = ""
    lowering: ClassVar[tuple[tuple[str | None, str], ...]] = ()

    def availability(self) -> Availability:
        """Whether this backend can run here; the reason when it cannot."""
        return Availability(True)

    def passes(self, ctx: PassContext) -> list[str]:
        """Pass names this backend runs after canonicalisation (quantization, fusion, lowering), in order."""
        names = fp8_pipeline(ctx) if self.fp8 else []
        names += [n for n in DEFAULT_FUSIONS if n in PASSES]
        return names + [name for option, name in self.lowering
                        if option is None or bool(ctx.backend_options.get(option, True))]

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        """Return a callable that runs ``gm``'s computation on the flat tensor inputs."""
        raise NotImplementedError

    def options(self, ctx: PassContext, allowed: tuple[str, ...]) -> dict[str, Any]:
        """The user's ``CompileConfig.backend_options`` for this backend, checked against ``allowed``.

        Raises:
            ValueError: an option this backend does not know (the message lists the allowed ones).
        """
        options = dict(ctx.backend_options)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {self.name} backend_options {unknown}; allowed: {list(allowed)}")
        return options

    def check_available(self) -> None:
        avail = self.availability()
        if not avail.ok:
            raise BackendUnavailableError(
                f"backend {self.name!r} is not available on this machine: {avail.reason}. "
                f"Available backends here: {', '.join(available_backends()) or 'none'}; "
                "backend='auto' picks the best of them."
            )


BACKENDS: Registry[type[Backend]] = Registry("backend")


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator registering a :class:`Backend` subclass under ``name``."""

    def deco(cls: type[Backend]) -> type[Backend]:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f"@register_backend({name!r}) expects a Backend subclass, got {cls!r}")
        cls.name = name
        BACKENDS.add(name, cls)
        return cls

    return deco


def get_backend(name: str) -> Backend:
    """An instance of the backend registered as ``name`` (unknown names raise with the known ones)."""
    return BACKENDS.get(name)()


def available_backends() -> list[str]:
    return [n for n in BACKENDS.names() if BACKENDS.get(n)().availability().ok]


def backend_status() -> list[tuple[str, Availability, str]]:
    """(name, availability, description) of every registered backend, for ``recfx doctor`` and listings."""
    return [(n, BACKENDS.get(n)().availability(), BACKENDS.get(n).description) for n in BACKENDS.names()]


AUTO_NAMES = ("auto", "auto-fp8")


def resolve_backend(name: str) -> tuple[Backend, str]:
    """The backend to use and a sentence saying why.

    ``auto`` picks the highest-priority available backend in the model's precision, ``auto-fp8`` the best FP8 one.
    Any other name must be registered and available: an explicit backend never falls back to another.

    Raises:
        UnknownKeyError: unknown name (the message lists the known ones).
        BackendUnavailableError: the named backend cannot run here (the message says why).
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    if name in AUTO_NAMES:
        want_fp8 = name == "auto-fp8"
        candidates = sorted((BACKENDS.get(n)() for n in BACKENDS.names()), key=lambda b: -b.priority)
        skipped: list[str] = []
        for be in candidates:
            if be.fp8 != want_fp8:
                continue
            avail = be.availability()
            if avail.ok:
                why = f"{name}: picked {be.name!r}"
                if skipped:
                    why += " (skipped " + "; ".join(skipped) + ")"
                log.info("%s", why)
                return be, why
            skipped.append(f"{be.name}: {avail.reason}")
        raise BackendUnavailableError(f"{name}: no backend is available: " + "; ".join(skipped))
    be = get_backend(name)
    be.check_available()
    return be, f"requested {name!r}"


def cuda_available() -> Availability:
    if not torch.cuda.is_available():
        return Availability(False, "no CUDA GPU visible to torch")
    return Availability(True)
