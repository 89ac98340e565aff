"""Executable invariants: graph lint plus what must hold after each pipeline stage."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import STAGES
from recfx.passes.utils import op_name

Invariant = Callable[[GraphModule], list[str]]

_STAGE_INVARIANTS: dict[str, list[tuple[str, Invariant]]] = {s: [] for s in STAGES}


def register_invariant(stage: str, name: str) -> Callable[[Invariant], Invariant]:
    """Register a check that must hold once ``stage`` is complete; it returns violations as strings."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")

    def deco(fn: Invariant) -> Invariant:
        if any(n == name for n, _ in _STAGE_INVARIANTS[stage]):
            raise ValueError(f"invariant {name!r} is already registered for stage {stage!r}")
        _STAGE_INVARIANTS[stage].append((name, fn))
        return fn

    return deco


def stage_invariants(stage: str) -> list[tuple[str, Invariant]]:
    return list(_STAGE_INVARIANTS[stage])


def lint(gm: GraphModule) -> list[str]:
    """fx's structural lint plus recfx's own: every call_function node has tensor metadata where expected."""
    try:
        gm.graph.lint()
    except Exception as err:  # noqa: BLE001 - fx raises RuntimeError / AssertionError with the offending node in the text
        return [f"graph lint failed: {err}"]
    return []


def _ops(gm: GraphModule, names: set[str]) -> list[str]:
    return [f"{n.name} ({op_name(n)})" for n in gm.graph.nodes if op_name(n) in names]


@register_invariant("canonicalize", "no_eval_noops")
def _no_noops(gm: GraphModule) -> list[str]:
    """After canonicalisation: no dropout and no alias nodes remain, except an alias that keeps an output from being
    the caller's own input tensor (``remove_noops`` keeps those on purpose)."""
    bad = [f"{n.name} ({op_name(n)})" for n in gm.graph.nodes
           if op_name(n) in {"aten.dropout.default", "aten.alias.default", "aten.feature_dropout.default"}
           and not _guards_an_input(n)]
    return [f"no-op left after canonicalisation: {b}" for b in bad]


def _guards_an_input(node: Node) -> bool:
    src = node.args[0] if node.args else None
    return (op_name(node) == "aten.alias.default" and isinstance(src, Node) and src.op == "placeholder"
            and any(u.op == "output" for u in node.users))


@register_invariant("canonicalize", "no_dead_code")
def _no_dead_code(gm: GraphModule) -> list[str]:
    """After canonicalisation: every pure node is used."""
    from recfx.passes.utils import is_impure

    return [f"dead node: {n.name} ({op_name(n)})" for n in gm.graph.nodes
            if not n.users and not is_impure(n) and n.op in ("call_function", "get_attr")]


def check_all(gm: GraphModule, completed_stages: list[str]) -> list[str]:
    """Lint plus the invariants of every completed stage."""
    problems = lint(gm)
    for stage in completed_stages:
        for name, fn in _STAGE_INVARIANTS[stage]:
            problems.extend(f"[{stage}/{name}] {p}" for p in fn(gm))
    return problems


def assert_no_op(gm: GraphModule, target: torch._ops.OpOverload) -> None:
    """Test helper: raise if ``target`` appears in the graph."""
    names = [n.name for n in gm.graph.nodes if n.target is target]
    if names:
        raise AssertionError(f"{target} still present at {names}")
