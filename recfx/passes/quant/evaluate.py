"""``fp8_evaluate``: per-layer SQNR and statistics, sensitivity ranking and ``auto_exclude``, before conversion.

It runs a *probe* copy of the calibrated graph in which every planned linear is a switchable module: float or FP8
(the same ``recfx::fp8_linear[_blocks]`` ops the lowered graph calls). With every switch off, each probe measures its
own FP8 output error against its float output on the same (float) input: the layer's SQNR. Switching on one module
at a time ranks the layers by the model output error each causes alone; ``auto_exclude`` then keeps the most
sensitive modules in high precision until the output cosine reaches the target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.fx import GraphModule, Node

from recfx.analysis.numerics import cosine, sqnr_from_energies
from recfx.analysis.stats import tensor_stats
from recfx.ops.fp8 import quantize_weight, scale_from_amax
from recfx.ops.fp8_terms import EAGER, weight_granularity
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.state import (
    PLAN,
    Fp8State,
    LayerPlan,
    LayerResult,
    node_arg,
    observers,
    plans,
)
from recfx.passes.utils import fetch_attr

log = logging.getLogger(__name__)
ops = torch.ops.recfx


class _Probe(torch.nn.Module):
    """A linear that computes float or FP8 output and can measure the FP8 error of its own output."""

    def __init__(self, plan: LayerPlan, weight: torch.Tensor, bias: torch.Tensor | None,
                 quantized: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.plan = plan
        self.weight, self.bias = weight, bias
        self.w_q, self.w_scale = quantized
        self.x_scale = scale_from_amax(torch.tensor(plan.x_amax)).to(weight.device) if plan.static else None
        self.enabled = False
        self.measure = False
        self.signal = 0.0
        self.noise = 0.0

    def quantized(self, x: torch.Tensor) -> torch.Tensor:
        gemm = weight_granularity(self.plan.weight).gemm
        return gemm.call(EAGER, x, self.w_q, self.w_scale, self.bias, self.x_scale, self.plan.block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ref = F.linear(x, self.weight, self.bias)
        if not (self.enabled or self.measure):
            return ref
        q = self.quantized(x)
        if self.measure:
            r64 = ref.double()
            self.signal += float(r64.pow(2).sum())
            self.noise += float((r64 - q.double()).pow(2).sum())
        return q if self.enabled else ref

    @property
    def sqnr_db(self) -> float:
        return sqnr_from_energies(self.signal, self.noise)


def build_probe(gm: GraphModule, weights: dict[tuple[str, str, int | None], Any] | None = None,
                ) -> tuple[GraphModule, dict[str, _Probe]]:
    """A copy of ``gm`` (sharing its tensors) with observers bypassed and planned linears as :class:`_Probe`.

    ``weights`` (``Fp8State.weights``) receives the FP8 weight copies the probes use, for ``fp8_convert``.
    """
    graph = torch.fx.Graph()
    graph._codegen = gm.graph._codegen  # the same pytree calling convention (shared, never mutated)
    env: dict[Node, Node] = {}
    graph.output(graph.graph_copy(gm.graph, env))
    obs = observers(gm)
    probes: dict[str, _Probe] = {}
    modules: dict[str, torch.nn.Module] = {}
    weights = {} if weights is None else weights  # one FP8 copy per weight, granularity and block size
    for old, new in env.items():
        if old.op == "call_module" and old.target in obs:
            new.replace_all_uses_with(node_arg(new, 0))
            graph.erase_node(new)
        elif PLAN in old.meta:
            plan: LayerPlan = old.meta[PLAN]
            bias_node = old.args[2] if len(old.args) > 2 else None
            bias = fetch_attr(gm, str(bias_node.target)) if isinstance(bias_node, Node) else None
            key = f"_fp8_probe_{len(probes)}"
            target = str(node_arg(old, 1).target)
            weight = fetch_attr(gm, target)
            wkey = (target, plan.weight, plan.block_size)
            if wkey not in weights or weights[wkey][0] is not weight:
                weights[wkey] = (weight, *quantize_weight(weight, plan.weight, plan.block_size))
            probes[plan.name] = modules[key] = _Probe(plan, weight, bias, weights[wkey][1:])
            with graph.inserting_before(new):
                call = graph.call_module(key, (new.args[0],))
            new.replace_all_uses_with(call)
            graph.erase_node(new)
    root: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "get_attr":
            root[str(node.target)] = fetch_attr(gm, str(node.target))
        elif node.op == "call_module":
            root[str(node.target)] = modules.get(str(node.target)) or gm.get_submodule(str(node.target))
    return GraphModule(root, graph), probes


def run_all(module: Any, data: Sequence[tuple[torch.Tensor, ...]]) -> list[Any]:
    with torch.no_grad():
        return [module(*batch) for batch in data]


def output_cosine(reference: list[Any], outputs: list[Any]) -> float:
    """The smallest cosine similarity over the floating-point outputs (all batches concatenated).

    Raises:
        ValueError: the model has no floating-point output.
    """
    refs = [pytree.tree_leaves(r) for r in reference]
    outs = [pytree.tree_leaves(o) for o in outputs]
    worst = None
    for i, leaf in enumerate(refs[0]):
        if isinstance(leaf, torch.Tensor) and leaf.dtype.is_floating_point:
            a = torch.cat([r[i].flatten() for r in refs])
            b = torch.cat([o[i].flatten() for o in outs])
            c = cosine(a, b)
            worst = c if worst is None else min(worst, c)
    if worst is None:
        raise ValueError("the model has no floating-point output to compare (auto_exclude / sensitivity need one)")
    return worst


@register_pass("fp8_evaluate", stage="quantize")
class Fp8Evaluate:
    """Every planned layer has its SQNR and statistics in the FP8 state; auto_exclude removed the plans it drops."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        state = Fp8State.of(self.ctx)
        cfg = state.config
        todo = plans(gm)
        if not todo:
            return PassResult(gm, modified=False)
        data = state.eval_data or [tuple(self.ctx.example_inputs)]
        probe_gm, probes = build_probe(gm, state.weights)
        for p in probes.values():
            p.measure = True
        reference = run_all(probe_gm, data)
        for p in probes.values():
            p.measure = False
        self._record_layers(gm, todo, probes, state)
        dropped = 0
        if cfg.sensitivity or cfg.auto_exclude is not None:
            modules = self._rank(probe_gm, probes, data, reference, state)
            if cfg.auto_exclude is not None:
                dropped = self._auto_exclude(gm, probe_gm, probes, modules, data, reference, state)
        return PassResult(gm, modified=dropped > 0, changed_nodes=dropped,
                          detail=f"{len(probes)} layers measured" + (f", {dropped} auto-excluded" if dropped else ""))

    @staticmethod
    def _record_layers(gm: GraphModule, todo: list[tuple[Node, LayerPlan]], probes: dict[str, _Probe],
                       state: Fp8State) -> None:
        obs = observers(gm)
        weight_stats: dict[str, Any] = {}
        for node, plan in todo:
            target = str(node_arg(node, 1).target)
            if target not in weight_stats:
                weight_stats[target] = tensor_stats(fetch_attr(gm, target))
            x_scale = float(scale_from_amax(torch.tensor(plan.x_amax))) if plan.static else None
            state.layers[plan.name] = LayerResult(
                plan.name, plan.module_path, plan.kind, plan.weight, plan.activation, probes[plan.name].sqnr_db,
                weight_stats[target], obs[plan.observer].stats.stats() if plan.observer in obs else None, x_scale)

    @staticmethod
    def _set(probes: dict[str, _Probe], enabled: set[str]) -> None:
        for p in probes.values():
            p.enabled = p.plan.module_path in enabled

    def _rank(self, probe_gm: GraphModule, probes: dict[str, _Probe], data: list[Any], reference: list[Any],
              state: Fp8State) -> list[str]:
        """Modules ordered by the output error each causes alone (largest first)."""
        modules = sorted({p.plan.module_path for p in probes.values()})
        scores = []
        for module in modules:
            self._set(probes, {module})
            scores.append((module, 1.0 - output_cosine(reference, run_all(probe_gm, data))))
        scores.sort(key=lambda t: -t[1])
        state.sensitivity = scores
        return [m for m, _ in scores]

    def _auto_exclude(self, gm: GraphModule, probe_gm: GraphModule, probes: dict[str, _Probe], ranked: list[str],
                      data: list[Any], reference: list[Any], state: Fp8State) -> int:
        """Binary search for the fewest most-sensitive modules to keep in float to reach the target cosine."""
        target = state.config.auto_exclude
        assert target is not None

        def cos_without(k: int) -> float:
            self._set(probes, set(ranked[k:]))
            return output_cosine(reference, run_all(probe_gm, data))

        lo, hi = 0, len(ranked)
        best = cos_without(0)
        if best < target:
            best = 1.0
            while lo + 1 < hi:  # invariant: excluding `hi` modules reaches the target, excluding `lo` does not
                mid = (lo + hi) // 2
                c = cos_without(mid)
                if c >= target:
                    hi, best = mid, c
                else:
                    lo = mid
            keep_float = set(ranked[:hi])
        else:
            keep_float = set()
        state.auto_excluded = sorted(keep_float)
        state.auto_exclude_cosine = best
        dropped = 0
        for node, plan in plans(gm):
            if plan.module_path in keep_float:
                del node.meta[PLAN]
                state.layers.pop(plan.name, None)
                dropped += 1
        log.info("auto_exclude: %d modules kept in high precision for output cosine %.6f >= %s", len(keep_float),
                 best, target)
        return dropped
