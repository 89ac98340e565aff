"""``recfx export-onnx``: compile a model and write its optimised graph as ONNX (fp32 or FP8 Q/DQ), then lint it.

Calibration data for ``--static-activations`` (registered models): ``--calibration-batches`` batches from the
model's own input generator (seeds 1..N, batch ``--batch``); a ``module:factory`` model is calibrated on its
example inputs. Exit status: 0 written, 2 bad options or a failed export / strict lint (nothing written).
"""

from __future__ import annotations

import argparse
import json

from recfx.tools.commands import command, quant_help


@command("export-onnx", help="export a model's optimised graph to ONNX (fp32 or FP8 Q/DQ, TensorRT plugins), lint it")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recfx.onnx.config import MAX_OPSET, MIN_FP8_OPSET, MIN_OPSET
    from recfx.passes.quant.calibrators import CALIBRATORS

    parser.add_argument("model", help="registered model name (recfx list models) or package.module:factory "
                                      "returning (model, example_inputs)")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write (its folder must exist)")
    parser.add_argument("--fp8", action="store_true", help="quantize to FP8 (E4M3) first (eager-fp8 passes)")
    parser.add_argument("--static-activations", action="store_true",
                        help="FP8 activations with calibrated per-tensor scales (default: dynamic per-token)")
    parser.add_argument("--calibration-batches", type=int, default=4, metavar="N",
                        help="calibration batches for --static-activations (default 4)")
    parser.add_argument("--calibrator", default="max", choices=CALIBRATORS.names(),
                        help="how static scales are chosen (default max)")
    parser.add_argument("--quant", type=json.loads, default=None, metavar="JSON",
                        help=quant_help('QuantConfig fields as JSON, e.g. \'{"weight": "per_tensor"}\''))
    parser.add_argument("--ksa-as-ops", action="store_true",
                        help="export recfx::ksa_attention as standard ONNX ops instead of the KsaAttention plugin")
    parser.add_argument("--opset", type=int, default=MIN_FP8_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (FP8 needs >= {MIN_FP8_OPSET}; default "
                             f"{MIN_FP8_OPSET})")
    parser.add_argument("--batch", type=int, default=2, help="example batch size (>= 2 keeps the batch dynamic)")
    parser.add_argument("--dynamic", action="append", default=[], metavar="INPUT:DIM:NAME", type=_dynamic_dim,
                        help="another dynamic dim, e.g. tokens:1:seq (repeatable; default: the registered model's "
                             "own, besides the batch)")
    parser.add_argument("--static-shapes", action="store_true", help="fix every dim to the example inputs' sizes")
    parser.add_argument("--no-optimize", action="store_true", help="skip the ONNX optimizer (constant folding, CSE)")
    parser.add_argument("--strict", action="store_true",
                        help="TensorRT rule violations are errors: nothing is written and the exit status is 2")
    parser.add_argument("--no-lint", action="store_true", help="do not run the TensorRT-rules linter")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model weights and inputs (default 0)")


def _dynamic_dim(text: str) -> tuple[str, int, str]:
    parts = text.split(":")
    if len(parts) != 3 or not parts[1].lstrip("-").isdigit() or not parts[2].isidentifier():
        raise argparse.ArgumentTypeError(f"expected INPUT:DIM:NAME like tokens:1:seq, got {text!r}")
    return parts[0], int(parts[1]), parts[2]


def run(args: argparse.Namespace) -> int:
    import recfx
    from recfx.models.resolve import resolve_model
    from recfx.onnx import OnnxExportConfig

    if args.static_activations and not args.fp8:
        raise ValueError("--static-activations needs --fp8")
    if args.calibration_batches < 1:
        raise ValueError(f"--calibration-batches must be >= 1, got {args.calibration_batches}")
    if args.dynamic and args.static_shapes:
        raise ValueError("--dynamic and --static-shapes contradict each other")
    recfx.onnx.check_writable(args.output)
    name, model, inputs, spec = resolve_model(args.model, batch=args.batch, seed=args.seed)
    dims: dict[str, dict[int, str]] = {}
    for input_name, dim, symbol in args.dynamic:
        dims.setdefault(input_name, {})[dim] = symbol
    if not args.dynamic and spec is not None and not args.static_shapes:
        dims = {k: dict(v) for k, v in spec.dynamic_dims.items()}
    config = OnnxExportConfig(opset=args.opset, fp8=args.fp8, static_activations=args.static_activations,
                              ksa_as_ops=args.ksa_as_ops, dynamic=not args.static_shapes, dynamic_dims=dims,
                              optimize=not args.no_optimize,
                              lint="off" if args.no_lint else "strict" if args.strict else "warn")
    quant = calibration = None
    if args.fp8:
        fields = {"calibrator": args.calibrator, "progress": False, **(args.quant or {})}
        quant = recfx.QuantConfig.from_dict(fields)
        if args.static_activations:
            calibration = ([spec.example_inputs(args.batch, seed=args.seed + 1 + i)
                            for i in range(args.calibration_batches)] if spec is not None else [inputs])
    result = recfx.export_onnx(model, inputs, args.output, config.replace(model_name=name), calibration=calibration,
                               quant=quant)
    print(result.summary())
    if result.lint is not None and not result.lint.ok:
        print(result.lint.render())
    return 0
