"""``recfx analyze MODEL...``: weight / activation distribution statistics per layer and per model, and a PNG."""

from __future__ import annotations

import argparse
import json
import math

from recfx.tools.commands import command

DEFAULT_MODELS = ("onerec-tiny", "dlrm-small", "ksa-tiny")


@command("analyze", help="per-layer and per-model weight/activation statistics (FP8 friendliness) and a PNG plot")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS),
                        help="registered model names or package.module:factory (default: onerec-tiny dlrm-small "
                             "ksa-tiny: a generative recommender, a classic DLRM, an LLM-like decoder)")
    parser.add_argument("--batch", type=int, default=4, help="requests per batch (default 4)")
    parser.add_argument("--batches", type=int, default=2, help="batches run through each model (default 2)")
    parser.add_argument("--out", default="recfx_analysis.png", help="PNG to write (default recfx_analysis.png)")
    parser.add_argument("--json", default=None, help="also write every statistic to this JSON file")
    parser.add_argument("--layers", type=int, default=12,
                        help="layers per model in the per-layer table, worst activation kurtosis first (0: all)")
    parser.add_argument("--outlier-channels", type=int, default=0,
                        help="emulate a trained LLM: multiply this many channels of every norm gain by "
                             "--outlier-scale (default 0: the plain random-init model)")
    parser.add_argument("--outlier-scale", type=float, default=20.0, help="outlier channel gain (default 20)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from recfx._io import atomic_write_text, check_writable_file
    from recfx.analysis.distribution import add_outlier_channels, analyze_model, plot
    from recfx.models.resolve import resolve_model

    if args.batch < 1 or args.batches < 1:
        raise ValueError(f"--batch and --batches must be >= 1, got {args.batch} and {args.batches}")
    if args.outlier_channels < 0:
        raise ValueError(f"--outlier-channels must be >= 0, got {args.outlier_channels}")
    for out in filter(None, (args.out, args.json)):  # fail before the (slow) analysis, not after it
        check_writable_file(out)
    results = []
    for ref in args.models:
        name, model, inputs, spec = resolve_model(ref, batch=args.batch)
        batches = [spec.example_inputs(args.batch, seed=s) for s in range(args.batches)] if spec else [inputs]
        if args.outlier_channels:
            changed = add_outlier_channels(model, args.outlier_channels, args.outlier_scale)
            name = f"{name}+outliers" if changed else name
        results.append(analyze_model(name, model, batches))
    console = Console(width=150)
    summary = Table(title="per model (registered models: random-init weights unless --outlier-channels)",
                    title_justify="left")
    summary.add_column("statistic")
    for r in results:
        summary.add_column(r.name, justify="right")
    keys = list(results[0].summary())
    for key in keys:
        summary.add_row(key, *(_fmt(r.summary()[key]) for r in results))
    for r in results:
        table = Table(title=f"{r.name}: per layer (input activation X, weight W)", title_justify="left")
        for col in ("layer", "X var", "X absmax", "X p99", "X kurt", "X FP8 dB", "W var", "W absmax", "W p99",
                    "W kurt", "W FP8 dB"):
            table.add_column(col, justify="left" if col == "layer" else "right")
        layers = sorted(r.layers, key=lambda la: -la.activation.kurtosis)
        for la in layers[: args.layers or None]:
            x, w = la.activation, la.weight
            table.add_row(la.name, *(_fmt(v) for v in (x.variance, x.abs_max, x.abs_p99, x.kurtosis,
                                                       la.activation_sqnr_db, w.variance, w.abs_max, w.abs_p99,
                                                       w.kurtosis, la.weight_sqnr_db)))
        console.print(table)
    console.print(summary)
    path = plot(results, args.out)
    console.print(f"wrote {path}")
    if args.json:
        atomic_write_text(args.json, json.dumps([r.to_dict() for r in results], indent=1))
        console.print(f"wrote {args.json}")
    return 0


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return "nan" if math.isnan(v) else f"{v:.3g}"
