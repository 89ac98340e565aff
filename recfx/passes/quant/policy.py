"""Which linears are quantized: classify each linear node, then apply the default policy and the user's rules.

Every GEMM with a constant weight reaches the policy as an ``aten.linear`` (``matmul_to_linear`` canonicalises
``matmul``, ``mm``, ``addmm``, ``bmm`` against one weight and linear ``einsum``; ``inline_autocast`` opens autocast
regions); :func:`other_weight_gemms` lists those left in another form, which the report counts as excluded.
Output heads are recognised by their position in the graph (the linear feeds a model output or a top-k / argmax /
sort without another linear in between), never by the module's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import logging
import re

import torch
from torch.fx import GraphModule, Node

from recfx.passes.quant.config import (
    DEFAULT_EXCLUDED_KINDS,
    QuantConfig,
    QuantRule,
    check_pairing,
)
from recfx.passes.utils import op_name

log = logging.getLogger(__name__)

aten = torch.ops.aten
#: Ops a model input may pass through and still count as "read directly" by an input projection.
_VIEW_OPS = frozenset({"view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "contiguous", "clone",
                       "to", "_to_copy", "expand", "permute", "transpose"})
_ROUTER_NAMES = re.compile(r"^(router|gate|gating|gate_network|routing)$", re.IGNORECASE)
_ROUTER_TYPES = re.compile(r"(Router|Gate|Gating)$")
#: ops that turn scores into a model's answer: a linear feeding one of them (or an output) is an output head
_RESULT_OPS = frozenset({"topk", "argmax", "argmin", "sort", "argsort", "multinomial"})
#: views through which a linear's weight is still the constant it reads (weights stored [K, N] are transposed)
_WEIGHT_VIEWS = frozenset({aten.t.default, aten.transpose.int, aten.permute.default})
#: GEMM ops that count as weight GEMMs when one operand is a constant but were not canonicalised to a linear
_OTHER_GEMMS = frozenset({aten.matmul.default, aten.mm.default, aten.addmm.default, aten.bmm.default,
                          aten.baddbmm.default, aten.einsum.default})
_ATTN = re.compile(r"(attn|attention)", re.IGNORECASE)
_FFN = re.compile(r"(ffn|mlp|feed_?forward|swiglu|moe)", re.IGNORECASE)
_EXPERT = re.compile(r"(^|\.)(shared_)?experts?(\.|$)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class LinearInfo:
    """What the policy knows about one linear node."""

    node: str
    module_path: str
    module_types: tuple[str, ...]  # qualified class names of the layer and its enclosing modules, innermost last
    op: str
    kinds: frozenset[str]
    constant_weight: bool
    dtype: torch.dtype | None

    @property
    def primary_kind(self) -> str:
        for k in ("router", "head", "input_projection", "expert", "attention", "ffn"):
            if k in self.kinds:
                return k
        return "linear"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's verdict on one linear: quantized or not, why, and with which granularity."""

    info: LinearInfo
    quantize: bool
    reason: str
    weight: str = ""
    activation: str = ""


def linear_nodes(gm: GraphModule) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.linear.default]


def module_stack(node: Node) -> list[tuple[str, str]]:
    """(path, qualified type) pairs from the outermost module to the innermost, without the root."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(path, str(typ)) for path, typ in stack.values() if path]


def _reads_model_input(node: Node) -> bool:
    x = node.args[0]
    while isinstance(x, Node) and x.op == "call_function":
        name = op_name(x).split(".")
        if len(name) < 2 or name[1] not in _VIEW_OPS:
            return False
        x = x.args[0]
    return isinstance(x, Node) and x.op == "placeholder"


def weight_source(w: object) -> Node | None:
    """The constant (``get_attr``) a linear's weight argument is, directly or through a transpose; else None."""
    while isinstance(w, Node) and w.op == "call_function" and w.target in _WEIGHT_VIEWS:
        w = w.args[0]
    return w if isinstance(w, Node) and w.op == "get_attr" else None


def other_weight_gemms(gm: GraphModule) -> list[Node]:
    """GEMM nodes other than ``aten.linear`` with a constant operand (left so because they are not a linear form)."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _OTHER_GEMMS:
            operands = node.args[1] if node.target is aten.einsum.default else node.args
            if any(weight_source(a) is not None for a in operands if isinstance(a, Node)):
                out.append(node)
    return out


def _feeds_result(gm: GraphModule) -> set[Node]:
    """Nodes from which a model output or a top-k / argmax / sort is reachable without passing through a linear."""
    reach: set[Node] = set()
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "output" or (node.op == "call_function" and _base_name(node) in _RESULT_OPS):
            reach.add(node)
        elif node.op == "call_function" and node.target is aten.linear.default:
            continue  # a linear ends the path: what feeds it is not a head
        elif any(u in reach for u in node.users):
            reach.add(node)
    return reach


def _base_name(node: Node) -> str:
    parts = op_name(node).split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def classify(gm: GraphModule) -> dict[Node, LinearInfo]:
    """Classify every ``aten.linear`` node: its module path and types, and kinds (router, head, expert...)."""
    results = _feeds_result(gm)
    out = {}
    for node in linear_nodes(gm):
        stack = module_stack(node)
        path = stack[-1][0] if stack else node.name
        types = tuple(t for _, t in stack)
        last = path.rsplit(".", 1)[-1]
        kinds = {"linear"}
        short_types = [t.rsplit(".", 1)[-1] for t in types]
        if _ROUTER_NAMES.match(last) or (short_types and _ROUTER_TYPES.search(short_types[-1])):
            kinds.add("router")
        if _EXPERT.search(path):
            kinds.add("expert")
        if any(_ATTN.search(p) for p, _ in stack) or any(_ATTN.search(t) for t in short_types):
            kinds.add("attention")
        # the graph-position kinds (feeds an output or a top-k, reads a model input) never override an attention
        # or expert linear, which the spec quantizes (a block over hidden states has both at its edges)
        named = bool(kinds & {"attention", "expert"})
        if any(u in results for u in node.users) and not named:
            kinds.add("head")
        if _reads_model_input(node) and not named:
            kinds.add("input_projection")
        if any(_FFN.search(p.rsplit(".", 1)[-1]) for p, _ in stack) or any(_FFN.search(t) for t in short_types):
            kinds.add("ffn")
        constant = weight_source(node.args[1] if len(node.args) > 1 else None) is not None
        val = node.args[0].meta.get("val") if isinstance(node.args[0], Node) else None
        out[node] = LinearInfo(node.name, path, types, op_name(node), frozenset(kinds), constant,
                               val.dtype if isinstance(val, torch.Tensor) else None)
    return out


def _path_matches(glob: str, path: str) -> bool:
    parts = path.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), glob) for i in range(1, len(parts) + 1))


def _type_matches(name: str, types: tuple[str, ...]) -> bool:
    return any(t == name or t.rsplit(".", 1)[-1] == name for t in types)


def rule_matches(rule: QuantRule, info: LinearInfo) -> bool:
    """Whether every matcher the rule sets matches the linear."""
    if rule.path is not None and not _path_matches(rule.path, info.module_path):
        return False
    if rule.module_type is not None and not _type_matches(rule.module_type, info.module_types):
        return False
    if rule.op is not None and not (info.op == rule.op or info.op.startswith(rule.op + ".")):
        return False
    return rule.kind is None or rule.kind in info.kinds


def _explicit(rule: QuantRule, info: LinearInfo) -> bool:
    """An include re-includes a default-excluded layer only by naming its kind or by a real path glob."""
    excluded = info.kinds & set(DEFAULT_EXCLUDED_KINDS)
    if rule.kind is not None and rule.kind in excluded:
        return True
    return rule.path is not None and rule.path.strip("*.?") != ""


def decide(infos: dict[Node, LinearInfo], cfg: QuantConfig) -> dict[Node, Decision]:
    """Apply the defaults, then the rules in order (later rules override earlier ones).

    Raises:
        ValueError: a rule includes an op other than ``aten.linear``, or a linear whose weight is not a constant.
    """
    out = {}
    for node, info in infos.items():
        excluded = sorted(info.kinds & set(DEFAULT_EXCLUDED_KINDS)) if cfg.default_exclusions else []
        quantize = not excluded
        reason = f"default: {', '.join(excluded)} kept in high precision" if excluded else "default"
        weight, activation = cfg.weight, cfg.activation
        for i, rule in enumerate(cfg.rules):
            if not rule_matches(rule, info):
                continue
            if rule.action == "exclude":
                quantize, reason = False, f"rule #{i} {rule.describe()}"
                continue
            if excluded and not _explicit(rule, info):
                continue
            if not info.constant_weight:
                raise ValueError(f"rule #{i} {rule.describe()} includes {info.module_path} ({info.node}), whose "
                                 "weight is not a constant parameter; only linears with constant weights can be "
                                 "quantized offline")
            quantize, reason = True, f"rule #{i} {rule.describe()}"
            weight, activation = rule.weight or weight, rule.activation or activation
            check_pairing(weight, activation, f"rule #{i} {rule.describe()} on {info.module_path}")
        if quantize and not info.constant_weight:
            quantize, reason = False, "weight is not a constant (activation x activation product)"
        out[node] = Decision(info, quantize, reason, weight if quantize else "", activation if quantize else "")
    return out


def unmatched_rules(infos: dict[Node, LinearInfo], cfg: QuantConfig) -> list[str]:
    """A warning for every rule that matches no linear, listing similar module paths / types."""
    paths = sorted({i.module_path for i in infos.values()})
    types = sorted({t.rsplit(".", 1)[-1] for i in infos.values() for t in i.module_types})
    warnings = []
    for i, rule in enumerate(cfg.rules):
        if rule.op is not None and not rule.op.startswith("aten.linear"):
            raise ValueError(f"rule #{i} {rule.describe()}: only aten.linear layers (with constant weights) are "
                             "quantized by the FP8 passes; attention scores, softmax and other ops stay in high "
                             "precision")
        if any(rule_matches(rule, info) for info in infos.values()):
            continue
        pool = paths if rule.path else types if rule.module_type else []
        key = rule.path or rule.module_type or ""
        close = difflib.get_close_matches(key, pool, n=5, cutoff=0.4)
        hint = f"; similar names: {', '.join(close)}" if close else (f"; module paths look like: {', '.join(paths[:5])}"
                                                                     if paths else "")
        warnings.append(f"FP8 policy rule #{i} {rule.describe()} matches no linear layer{hint}")
    return warnings
