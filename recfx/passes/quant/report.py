"""The FP8 accuracy report: per-layer SQNR and statistics, what stayed in high precision, model-level error."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch
import torch.utils._pytree as pytree

from recfx.analysis.numerics import cosine, equal_fraction, max_abs_err, topk_overlap
from recfx.ops.fp8_terms import activation_mode, weight_granularity
from recfx.passes.quant.state import LayerResult

#: Layers shown by ``render`` (all are in ``to_dict``).
SHOWN_LAYERS = 15


@dataclasses.dataclass(frozen=True)
class OutputError:
    """How one model output of the FP8 graph compares with the float model on the evaluation data.

    Float outputs get ``cosine`` and ``max_abs_err``; integer outputs shaped ``(B, beams, ...)`` (recommended
    items) get ``topk_overlap``: the mean fraction of each request's item set (the first ``k`` beams) that both
    models return; other integer outputs get ``exact`` (fraction of equal elements).
    """

    name: str
    cosine: float | None = None
    max_abs_err: float | None = None
    topk_overlap: float | None = None
    k: int | None = None
    exact: float | None = None

    def summary(self) -> str:
        if self.topk_overlap is not None:
            return f"{self.name}: top-{self.k} item overlap {self.topk_overlap * 100:.1f}%"
        if self.exact is not None:
            return f"{self.name}: {self.exact * 100:.2f}% equal"
        return f"{self.name}: cosine {self.cosine:.6f}, max|err| {self.max_abs_err:.3g}"


def compare_model_outputs(reference: list[Any], outputs: list[Any], k: int | None = None) -> list[OutputError]:
    """Compare per output over all evaluation batches (float outputs concatenated; items per request)."""
    refs = [pytree.tree_leaves(r) for r in reference]
    outs = [pytree.tree_leaves(o) for o in outputs]
    result = []
    for i, leaf in enumerate(refs[0]):
        if not isinstance(leaf, torch.Tensor):
            continue
        name = f"output_{i}"
        if leaf.dtype.is_floating_point:
            a = torch.cat([r[i].double().flatten() for r in refs])
            b = torch.cat([o[i].double().flatten().to(a.device) for o in outs])
            result.append(OutputError(name, cosine=cosine(a, b), max_abs_err=max_abs_err(a, b)))
        elif leaf.dim() >= 2:
            per_batch = [topk_overlap(r[i], o[i].to(r[i].device), k) for r, o in zip(refs, outs)]
            result.append(OutputError(name, topk_overlap=sum(per_batch) / len(per_batch),
                                      k=min(k or leaf.shape[1], leaf.shape[1])))
        else:
            same = [equal_fraction(r[i], o[i]) for r, o in zip(refs, outs)]
            result.append(OutputError(name, exact=sum(same) / len(same)))
    return result


@dataclasses.dataclass
class Fp8Report:
    """What FP8 quantization did and what it cost in accuracy; ``print(report)`` or ``report.render()``.

    Attributes:
        config: the QuantConfig as a dict.
        data_source / batches: what the observers saw.
        linears / quantized: GEMMs with a constant weight found in the graph (linears after canonicalisation, and
            those left in another form) / lowered to FP8 GEMMs.
        excluded_by: how many of the others each rule kept in high precision (reason -> count).
        layers: per quantized layer (node) SQNR of its own output and statistics, in graph order.
        excluded: (module path, reason) of the linears kept in high precision.
        outputs: model-level error against the float model on the evaluation batches.
        sensitivity: (module path, 1 - output cosine when only it is quantized), most sensitive first.
        auto_excluded / auto_exclude_cosine: what ``auto_exclude`` kept in high precision and the cosine reached.
        warnings: policy warnings.
    """

    config: dict[str, Any]
    data_source: str = ""
    batches: int = 0
    linears: int = 0
    quantized: int = 0
    excluded_by: dict[str, int] = dataclasses.field(default_factory=dict)
    layers: list[LayerResult] = dataclasses.field(default_factory=list)
    excluded: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    outputs: list[OutputError] = dataclasses.field(default_factory=list)
    sensitivity: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    auto_excluded: list[str] = dataclasses.field(default_factory=list)
    auto_exclude_cosine: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def output_cosine(self) -> float | None:
        """The smallest cosine over the float outputs."""
        values = [o.cosine for o in self.outputs if o.cosine is not None]
        return min(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        def layer(r: LayerResult) -> dict[str, Any]:
            d = dataclasses.asdict(r)
            d["weight_stats"] = r.weight_stats.to_dict() if r.weight_stats else None
            d["activation_stats"] = r.activation_stats.to_dict() if r.activation_stats else None
            return d

        out = dataclasses.asdict(self)
        out["layers"] = [layer(r) for r in self.layers]
        out["output_cosine"] = self.output_cosine
        return out

    def render(self, width: int = 106) -> str:
        from rich import box
        from rich.console import Console
        from rich.table import Table

        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        c = self.config
        console.print(f"FP8 E4M3: weights {c['weight']}, activations {c['activation']}"
                      + (f" (calibrator {c['calibrator']})" if activation_mode(c["activation"]).calibrated else "")
                      + f"; {self.quantized} of {self.linears} weight GEMMs -> FP8 GEMMs; data: {self.batches} "
                      f"batch(es) of {self.data_source}")
        if self.excluded_by:
            console.print("  excluded: " + "; ".join(f"{n} x {why}" for why, n in sorted(self.excluded_by.items())))
        for o in self.outputs:
            console.print(f"  model vs float: {o.summary()}")
        shown = sorted(self.layers, key=lambda r: r.sqnr_db if r.sqnr_db is not None else math.inf)[:SHOWN_LAYERS]
        title = f"quantized layers, worst SQNR first ({len(shown)} of {len(self.layers)})"
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        stats = Table(title="their weight (W) and input activation (X) statistics", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("layer", "kind", "W / X", "SQNR dB", "W kurt", "X kurt", "X max/p99"):
            table.add_column(col, justify="left" if col in ("layer", "kind", "W / X") else "right")
        for col in ("layer", "W var", "W absmax", "W p99", "X var", "X absmax", "X p99"):
            stats.add_column(col, justify="left" if col == "layer" else "right")
        for r in shown:
            w, x = r.weight_stats, r.activation_stats
            scales = f"{weight_granularity(r.weight).short} / {activation_mode(r.activation).short}"
            table.add_row(r.name, r.kind, scales, _f(r.sqnr_db, ".1f"),
                          _f(w.kurtosis if w else None, ".2f"), _f(x.kurtosis if x else None, ".2f"),
                          _f(x.max_over_p99 if x else None, ".2f"))
            stats.add_row(r.name, *(_f(getattr(s, a) if s else None, ".3g") for s in (w, x)
                                    for a in ("variance", "abs_max", "abs_p99")))
        console.print(table)
        console.print(stats)
        if self.excluded:
            console.print("kept in high precision: " + "; ".join(f"{m} ({why})" for m, why in self.excluded))
        if self.sensitivity:
            top = ", ".join(f"{m} {e:.2e}" for m, e in self.sensitivity[:8])
            console.print(f"sensitivity (1 - output cosine, quantized alone), most sensitive first: {top}")
        if self.auto_exclude_cosine is not None:
            console.print(f"auto_exclude (target cosine {c['auto_exclude']}): kept {len(self.auto_excluded)} "
                          f"module(s) in high precision {self.auto_excluded} -> cosine {self.auto_exclude_cosine:.6f}")
        for text in self.warnings:
            console.print(f"warning: {text}")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.render()


def _f(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)
