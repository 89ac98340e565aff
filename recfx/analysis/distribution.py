"""Per-layer weight / activation distributions of whole models, compared side by side (is a model FP8-friendly?).

The argument of "Quantized Inference for OneRec-V2": generative recommenders have LLM-like, well-conditioned
weight and activation distributions, classic embedding + MLP recommenders do not. :func:`analyze_model` records, for
every ``nn.Linear``, the statistics of its weight and of its input activations (forward hooks over a few batches)
and the SQNR of FP8 quantization of both (per-channel weights, per-tensor activations scaled by their max).

With random-init reference models these statistics show what the architecture alone does (normal / uniform weights,
norms in front of linears), not what training does: trained models grow heavy tails and outlier channels.
``outlier_channels`` emulates those (LLM-like massive activation channels) explicitly.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import torch

from recfx._io import atomic_path
from recfx.analysis.numerics import sqnr_db, sqnr_from_energies
from recfx.analysis.stats import DistStats, RunningStats, tensor_stats
from recfx.ops.fp8 import quantize_weight, scale_from_amax, static_quantize


@dataclasses.dataclass
class LayerDistribution:
    """One linear layer: weight and input-activation statistics and their FP8 quantization SQNR (dB)."""

    name: str
    weight: DistStats
    activation: DistStats
    weight_sqnr_db: float
    activation_sqnr_db: float
    samples: torch.Tensor  # a few activation values normalised by their std, for the histogram plot

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight.to_dict(), "activation": self.activation.to_dict(),
                "weight_sqnr_db": self.weight_sqnr_db, "activation_sqnr_db": self.activation_sqnr_db}


@dataclasses.dataclass
class ModelDistribution:
    """Every linear layer of one model, and a summary."""

    name: str
    layers: list[LayerDistribution]

    def summary(self) -> dict[str, float]:
        """Model-level numbers: medians / maxima over the layers."""
        def med(xs: list[float]) -> float:
            return statistics.median(xs) if xs else float("nan")

        w_k = [la.weight.kurtosis for la in self.layers]
        x_k = [la.activation.kurtosis for la in self.layers]
        ratio = [la.activation.max_over_p99 for la in self.layers]
        return {
            "linear layers": len(self.layers),
            "weight kurtosis (median)": med(w_k), "weight kurtosis (max)": max(w_k, default=float("nan")),
            "act kurtosis (median)": med(x_k), "act kurtosis (max)": max(x_k, default=float("nan")),
            "act absmax/p99 (median)": med(ratio), "act absmax/p99 (max)": max(ratio, default=float("nan")),
            "weight FP8 SQNR dB (min)": min((la.weight_sqnr_db for la in self.layers), default=float("nan")),
            "act FP8 SQNR dB (min)": min((la.activation_sqnr_db for la in self.layers), default=float("nan")),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary(), "layers": [la.to_dict() for la in self.layers]}


class _Recorder:
    """Forward pre-hook state of one linear: running statistics, FP8 error of its inputs, a value sample."""

    SAMPLE = 4096

    def __init__(self) -> None:
        self.stats = RunningStats()
        self.signal = 0.0
        self.noise = 0.0
        self.sample: list[torch.Tensor] = []

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach().float()
        self.stats.update(x)
        scale = scale_from_amax(x.abs().amax())
        deq = static_quantize(x, scale).float() * scale
        self.signal += float(x.double().pow(2).sum())
        self.noise += float((x.double() - deq.double()).pow(2).sum())
        if sum(s.numel() for s in self.sample) < self.SAMPLE:
            self.sample.append(x.flatten()[: self.SAMPLE].cpu())


def add_outlier_channels(model: torch.nn.Module, channels: int, scale: float) -> int:
    """Multiply ``channels`` fixed channels of every norm's gain by ``scale``: the massive-activation channels of
    trained LLMs (inputs of q/k/v and FFN projections get a few huge columns). Returns how many norms changed."""
    changed = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            is_norm = "norm" in type(module).__name__.lower()
            if is_norm and isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.numel() > channels:
                idx = torch.linspace(0, weight.numel() - 1, channels).long()
                weight[idx] *= scale
                changed += 1
    return changed


def analyze_model(name: str, model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> ModelDistribution:
    """Run ``batches`` through ``model`` with a hook on every ``nn.Linear``; layers in module order.

    Raises:
        ValueError: the model has no ``nn.Linear`` layer.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"{name} has no nn.Linear layer to analyse")
    recorders = {n: _Recorder() for n, _ in linears}
    handles = [m.register_forward_pre_hook(recorders[n]) for n, m in linears]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(*batch)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for n, m in linears:
        rec = recorders[n]
        if rec.stats.count == 0:
            continue  # a layer the forward does not use
        w_q, w_s = quantize_weight(m.weight.detach().float())
        act = rec.stats.stats()
        sample = torch.cat(rec.sample)[: _Recorder.SAMPLE]
        sample = (sample - sample.mean()) / sample.std().clamp(min=1e-12)
        w_sqnr = sqnr_db(m.weight, w_q.float() * w_s)
        x_sqnr = sqnr_from_energies(rec.signal, rec.noise)
        layers.append(LayerDistribution(n, tensor_stats(m.weight), act, w_sqnr, x_sqnr, sample))
    return ModelDistribution(name, layers)


def plot(models: list[ModelDistribution], path: str | Path) -> Path:
    """Write a 3 x 2 PNG comparing the models: per-layer activation / weight kurtosis, activation max/p99, the
    histogram of standardised activations (log density: heavy tails show as wide skirts), and the raw scale of
    every layer's input activations and weights (variance and abs max: what an FP8 scale has to cover)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(3, 2, figsize=(12, 12))
    panels = [(axes[0, 0], [(lambda la: la.activation.kurtosis, "o", "")],
               "input activation kurtosis per layer (Gaussian = 3)"),
              (axes[0, 1], [(lambda la: la.weight.kurtosis, "o", "")],
               "weight kurtosis per layer (uniform 1.8, Gaussian 3)"),
              (axes[1, 0], [(lambda la: la.activation.max_over_p99, "o", "")],
               "input activation abs max / abs p99 per layer"),
              (axes[2, 0], [(lambda la: la.activation.variance, "o", "variance"),
                            (lambda la: la.activation.abs_max, "^", "abs max")],
               "input activation variance (o) and abs max (^) per layer"),
              (axes[2, 1], [(lambda la: la.weight.variance, "o", "variance"),
                            (lambda la: la.weight.abs_max, "^", "abs max")],
               "weight variance (o) and abs max (^) per layer")]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, series, title in panels:
        for i, m in enumerate(models):
            for value, marker, what in series:
                ys = [value(la) for la in m.layers]
                xs = [i + (j / max(len(ys) - 1, 1) - 0.5) * 0.6 for j in range(len(ys))]
                ax.scatter(xs, ys, s=12, alpha=0.7, marker=marker, color=colors[i % len(colors)],
                           label=f"{m.name} {what}".strip())
        ax.set_xticks(range(len(models)), [m.name for m in models], rotation=15, fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax = axes[1, 1]
    for m in models:
        values = torch.cat([la.samples for la in m.layers]).numpy()
        ax.hist(values, bins=200, density=True, histtype="step", log=True, label=m.name)
    ax.set_title("standardised input activations of all linears (log density)", fontsize=10)
    ax.set_xlabel("(x - mean) / std")
    ax.legend(fontsize=8)
    fig.suptitle("weight / activation distributions per model (recfx analyze)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
