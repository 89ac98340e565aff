"""The ``recfx`` command line: ``recfx <command> [options]``; ``recfx --help`` lists the commands."""

from __future__ import annotations

import argparse
import logging
import sys

from recfx._plugins import import_submodules
from recfx._version import __version__
from recfx.errors import RecfxError, UnknownKeyError
from recfx.tools.commands import COMMANDS

_NOT_COMMANDS = {"cli", "commands", "common"}


def _load_commands() -> None:
    import recfx.tools as pkg

    import_submodules(pkg, skip=frozenset(_NOT_COMMANDS))


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="recfx", description="recfx: compile recommender and long-context "
                                     "attention models (FP8, KSA, ONNX).")
    parser.add_argument("--version", action="version", version=f"recfx {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS.names():
        cmd = COMMANDS.get(name)
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args))
    except (ValueError, TypeError, UnknownKeyError, RecfxError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError) as err:
        print(f"recfx {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
