"""The CLI command registry: each ``recfx <command>`` lives in its own module under ``recfx/tools``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from recfx.registry import Registry


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit code."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Callable[..., None]]:
    """Decorate a module's ``add_arguments`` function; the module's ``run`` is looked up next to it.

    Example (in ``recfx/tools/mycmd.py``)::

        @command("mycmd", help="does things")
        def add_arguments(parser): parser.add_argument("--x")

        def run(args): return 0
    """

    def deco(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[..., None]:
        import sys

        module = sys.modules[add_arguments.__module__]

        def run(args: argparse.Namespace) -> int:
            return int(module.run(args) or 0)

        COMMANDS.add(name, Command(name, help, add_arguments, run))
        return add_arguments

    return deco


def quant_help(example: str) -> str:
    """Help for a ``--quant JSON`` option: ``example`` plus the registered granularities and calibrators."""
    from recfx.passes.quant.config import quant_choices

    known = "; ".join(f"{field}: {', '.join(names)}" for field, names in quant_choices().items())
    return f"{example} ({known})"
