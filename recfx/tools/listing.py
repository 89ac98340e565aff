"""``recfx list models|backends``: the names ``--model`` and ``--backends`` take, with what each is.

``models``: the registered reference models (any ``package.module:factory`` works too). ``backends``: the registered
backends, whether each can run here (and why not), plus ``auto`` / ``auto-fp8`` and what they pick here.
"""

from __future__ import annotations

import argparse

from recfx.tools.commands import command

KINDS = ("models", "backends")


@command("list", help="list the registered models (for --model) or backends (for --backends), one per line")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="what to list")


def run(args: argparse.Namespace) -> int:
    for line in model_lines() if args.kind == "models" else backend_lines():
        print(line)
    return 0


def model_lines() -> list[str]:
    """``name  family  description`` per registered model, then how to pass one of your own.

    Example:
        >>> any(line.startswith("onerec-tiny ") for line in model_lines())
        True
    """
    from recfx.models import MODELS

    width = max(map(len, MODELS.names()))
    lines = [f"{name:<{width}}  {MODELS.get(name).family:<6}  {MODELS.get(name).description}".rstrip()
             for name in MODELS.names()]
    return [*lines, "(or your own: package.module:factory, where factory() returns (model, example_inputs))"]


def backend_lines() -> list[str]:
    """``name  here?  fp8?  description or why not`` per registered backend, then what ``auto``/``auto-fp8`` pick."""
    from recfx.backends import AUTO_NAMES, BACKENDS, backend_status, resolve_backend
    from recfx.errors import BackendUnavailableError

    width = max(len(n) for n in [*BACKENDS.names(), *AUTO_NAMES])
    lines = []
    for name, availability, description in backend_status():
        here = "yes" if availability.ok else "no "
        fp8 = "fp8" if BACKENDS.get(name).fp8 else "   "
        what = description if availability.ok else f"cannot run here: {availability.reason}"
        lines.append(f"{name:<{width}}  {here}  {fp8}  {what}".rstrip())
    for name in AUTO_NAMES:
        try:
            pick = f"picks {resolve_backend(name)[0].name} here"
        except BackendUnavailableError as err:
            pick = f"picks nothing here: {err}"
        lines.append(f"{name:<{width}}  {pick}")
    return lines
