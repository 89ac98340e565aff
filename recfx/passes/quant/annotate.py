"""``fp8_annotate``: which weight GEMMs (linears) are quantized and how, recorded in ``node.meta["recfx_fp8"]``."""

from __future__ import annotations

import collections
import logging
import warnings

import torch
from torch.fx import GraphModule, Node

from recfx.ops.fp8_terms import FP8_STORAGE_DTYPES, is_fp8_op
from recfx.passes.base import PassContext, PassResult, register_pass
from recfx.passes.quant.policy import (
    Decision,
    LinearInfo,
    classify,
    decide,
    linear_nodes,
    other_weight_gemms,
    unmatched_rules,
    weight_source,
)
from recfx.passes.quant.state import PLAN, Fp8State, LayerPlan, node_arg, plans
from recfx.passes.utils import fetch_attr, tensor_meta

log = logging.getLogger(__name__)

#: Model compute dtypes the FP8 GEMM epilogue can produce.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_not_quantized(gm: GraphModule) -> None:
    """Raise ``ValueError`` if the graph already holds FP8 ops or FP8 tensors (quantizing twice is an error)."""
    for node in gm.graph.nodes:
        target = node.target
        if is_fp8_op(target):
            raise ValueError(f"the graph is already FP8-quantized (node {node.name} is {target}); compile the "
                             "original floating-point model instead")
        val = tensor_meta(node)
        if val is not None and val.dtype in FP8_STORAGE_DTYPES:
            raise ValueError(f"the graph is already FP8-quantized (node {node.name} is a {val.dtype} tensor); FP8 "
                             "post-training quantization needs the original floating-point model")


def _layer_names(nodes: list[Node], paths: dict[Node, str]) -> dict[Node, str]:
    seen: collections.Counter[str] = collections.Counter()
    names = {}
    for node in nodes:
        path = paths[node]
        names[node] = path if seen[path] == 0 else f"{path}#{seen[path]}"
        seen[path] += 1
    return names


def _materialise_weight(gm: GraphModule, node: Node) -> None:
    """Point a linear whose weight is a transposed constant at a constant holding the weight as linear reads it."""
    w = node.args[1]
    source = weight_source(w)
    if not isinstance(w, Node) or w.op == "get_attr" or source is None:
        return
    value = w.target(fetch_attr(gm, str(source.target)), *w.args[1:])  # type: ignore[operator]
    name, i = f"{str(source.target).replace('.', '_')}_as_linear", 0
    while hasattr(gm, f"{name}{i or ''}"):
        i += 1
    name = f"{name}{i or ''}"
    gm.register_buffer(name, value.detach().contiguous())
    with gm.graph.inserting_before(node):
        attr = gm.graph.get_attr(name)
    attr.meta["val"] = w.meta.get("val")
    node.replace_input_with(w, attr)
    while isinstance(w, Node) and not w.users:  # the transposes (and constant) only this linear read
        source_arg = w.args[0] if w.op == "call_function" else None
        gm.graph.erase_node(w)
        w = source_arg


def _not_linear_form(node: Node) -> Decision:
    info = LinearInfo(node.name, node.name, (), str(node.target), frozenset({"linear"}), True, None)
    return Decision(info, False, f"not in linear form ({node.target}): left in float")


def _check_dtype(node: Node, name: str) -> None:
    x, w = tensor_meta(node.args[0]), tensor_meta(node.args[1])
    for what, t in (("activation", x), ("weight", w)):
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"layer {name}: {what} dtype {t.dtype} is not supported by FP8 quantization "
                             "(float32, bfloat16 or float16); cast the model (e.g. model.float()) or exclude the "
                             "layer with QuantRule('exclude', path=...)")


@register_pass("fp8_annotate", stage="quantize",
               postcondition=lambda gm: [f"{n.name}: annotated but its weight is not a get_attr"
                                         for n, _ in plans(gm) if node_arg(n, 1).op != "get_attr"])
class Fp8Annotate:
    """Every linear the policy quantizes carries a LayerPlan in node.meta["recfx_fp8"]; no other node does."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx

    def __call__(self, gm: GraphModule) -> PassResult:
        state = Fp8State.of(self.ctx)
        cfg = state.config
        check_not_quantized(gm)
        infos = classify(gm)
        for text in unmatched_rules(infos, cfg):
            warnings.warn(text, UserWarning, stacklevel=2)
            state.warnings.append(text)
        decisions = decide(infos, cfg)
        names = _layer_names(linear_nodes(gm), {n: i.module_path for n, i in infos.items()})
        state.decisions = [*decisions.values(), *(_not_linear_form(n) for n in other_weight_gemms(gm))]
        count = 0
        for node, d in decisions.items():
            node.meta.pop(PLAN, None)
            if not d.quantize:
                continue
            _check_dtype(node, names[node])
            _materialise_weight(gm, node)
            node.meta[PLAN] = LayerPlan(names[node], d.info.module_path, d.info.primary_kind, d.weight, d.activation,
                                        cfg.block_size)
            count += 1
        found = len(state.decisions)
        if count == 0:
            text = (f"FP8 policy quantizes none of the {found} weight GEMMs (defaults keep routers, output heads and "
                    "input projections in high precision); add QuantRule('include', ...) rules" if found else
                    "FP8 found no GEMM with a constant weight (linear, matmul, mm, addmm, bmm, einsum) in the graph: "
                    "nothing was quantized")
            warnings.warn(text, UserWarning, stacklevel=2)
            state.warnings.append(text)
        log.info("fp8_annotate: %d of %d weight GEMMs quantized", count, found)
        return PassResult(gm, modified=count > 0, changed_nodes=count,
                          detail=f"{count}/{found} weight GEMMs quantized")
