"""``recfx lint-onnx FILE``: check an ONNX file against TensorRT's explicit-quantization and plugin rules.

Prints what TensorRT would not fuse (or would reject) and why, node by node. Exit status: 0 when clean (or when
violations were found without ``--strict``), 1 with ``--strict`` and violations, 2 (and one line on stderr) for a
missing, empty, cut-short or corrupt file, or one whose external data lies outside its folder.
"""

from __future__ import annotations

import argparse

from recfx.tools.commands import command

_MAX_MESSAGE = 400


@command("lint-onnx", help="check an ONNX file against TensorRT's FP8 Q/DQ and plugin rules")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .onnx file")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when there are violations")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from recfx.onnx import lint_model

    try:
        report = lint_model(args.file)
    except ValueError as err:  # one line, whatever the file held
        text = " ".join(str(err).split())
        raise ValueError(text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + " ...") from None
    print(report.to_json() if args.json else report.render())
    return 1 if args.strict and not report.ok else 0
