"""Which ONNX form each recfx op takes, and the check that every op of a graph has one.

Two kinds of entries, keyed by the op's qualified name (``recfx::fp8_linear``):

- *translations*: onnxscript functions handed to ``torch.onnx.export(custom_translation_table=...)``;
- *decompositions*: plain PyTorch functions that ``ExportedProgram.run_decompositions`` traces into aten ops before
  the ONNX translation (used for ``ksa_as_ops``).

The built-in entries are registered on first use (they import onnxscript, which ``import recfx`` does not need).

Example:
    >>> from recfx.onnx.translate import forms
    >>> forms(as_ops=False)["recfx::ksa_attention"].plugin
    'KsaAttention'
    >>> forms(as_ops=True)["recfx::ksa_attention"].kind
    'decompose'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node

from recfx.registry import Registry

#: Namespaces whose ops the torch.onnx exporter translates itself (torchlib, or decomposes first).
TORCH_NAMESPACES = frozenset({"aten", "prims", "_operator", "builtins"})


@dataclasses.dataclass(frozen=True)
class Translation:
    """How one recfx op becomes ONNX.

    Attributes:
        op: qualified op name, ``namespace::name`` (overload ``default``).
        function: an onnxscript traced function (``kind="onnx"``) or a PyTorch decomposition (``kind="decompose"``).
        kind: ``"onnx"`` or ``"decompose"``.
        plugin: the TensorRT plugin op type it emits, if any.
    """

    op: str
    function: Callable[..., Any]
    kind: str = "onnx"
    plugin: str | None = None

    def overloads(self) -> list[torch._ops.OpOverload]:
        """The overloads it covers: all of the op's (``ns::name``) or one (``ns::name.overload``); none when the
        op is not defined in this process."""
        namespace, _, qualified = self.op.partition("::")
        name, _, overload = qualified.partition(".")
        packet = getattr(getattr(torch.ops, namespace), name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            return []
        names = [overload] if overload else packet.overloads()
        return [getattr(packet, o) for o in names if hasattr(packet, o)]


#: Runtime checks torch.export leaves in a graph; the exporter drops them, so they are never "untranslatable".
CHECK_OPS = frozenset({"aten::_assert_tensor_metadata", "aten::_assert_scalar", "aten::_assert_async",
                       "aten::sym_constrain_range", "aten::sym_constrain_range_for_size",
                       "aten::_functional_assert_async"})

#: Default forms, keyed by op name.
TRANSLATIONS: Registry[Translation] = Registry("ONNX translation")
#: Forms used when the user asks for standard ONNX ops instead of plugins (``ksa_as_ops``), keyed by op name.
AS_OPS: Registry[Translation] = Registry("ONNX standard-op decomposition")


def register_translation(op: str | torch._ops.OpOverloadPacket | torch._ops.OpOverload, function: Callable[..., Any],
                         *, kind: str = "onnx", plugin: str | None = None, as_ops: bool = False) -> Translation:
    """Register the ONNX form of ``op``: every overload of ``namespace::name`` (or ``torch.ops.ns.name``), or one
    (``namespace::name.overload``, ``torch.ops.ns.name.overload``).

    Args:
        op: qualified op name, an op packet, or one overload.
        function: an onnxscript traced function (``kind="onnx"``) taking the op's arguments as ONNX values, or a
            PyTorch function with the op's signature (``kind="decompose"``).
        kind: ``"onnx"`` or ``"decompose"``.
        plugin: the TensorRT plugin op type the translation emits (for listings and metadata).
        as_ops: register the standard-ops alternative used with ``ksa_as_ops`` rather than the default form.

    Returns:
        The :class:`Translation`.

    Raises:
        ValueError: a malformed name, an unknown kind, or an op registered twice.
    """
    _register_builtin()
    if isinstance(op, torch._ops.OpOverloadPacket):
        op = op._qualified_op_name
    elif isinstance(op, torch._ops.OpOverload):
        op = f"{op._schema.name}.{op._overloadname}"
    if not isinstance(op, str) or "::" not in op:
        raise ValueError(f"op names look like 'namespace::name' or 'namespace::name.overload', got {op!r}")
    if kind not in ("onnx", "decompose"):
        raise ValueError(f"kind must be 'onnx' or 'decompose', got {kind!r}")
    entry = Translation(op, function, kind, plugin)
    (AS_OPS if as_ops else TRANSLATIONS).add(op, entry)
    return entry


_BUILTIN_LOADED = False


def _register_builtin() -> None:
    global _BUILTIN_LOADED
    if _BUILTIN_LOADED:
        return
    _BUILTIN_LOADED = True
    from recfx.onnx import translate_fp8 as fp8
    from recfx.onnx import translate_jagged as jagged
    from recfx.onnx import translate_ksa as ksa

    for name in ("quantize_fp8", "dequantize_fp8", "quantize_fp8_per_token", "quantize_fp8_groups",
                 "dequantize_fp8_blocks", "fp8_linear", "fp8_linear_blocks"):
        register_translation(f"recfx::{name}", getattr(fp8, name))
    register_translation("recfx::ksa_attention", ksa.ksa_attention_plugin, plugin=ksa.KSA_PLUGIN)
    register_translation("recfx::ksa_attention", ksa.ksa_attention_reference, kind="decompose", as_ops=True)
    for op, function in jagged.DECOMPOSITIONS.items():
        register_translation(op, function, kind="decompose")


def forms(as_ops: bool) -> dict[str, Translation]:
    """The form of every registered op for an export: ``as_ops`` prefers the standard-op decompositions."""
    _register_builtin()
    chosen = {name: TRANSLATIONS.get(name) for name in TRANSLATIONS.names()}
    if as_ops:
        chosen.update({name: AS_OPS.get(name) for name in AS_OPS.names()})
    return chosen


def translation_table(as_ops: bool) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """``custom_translation_table`` for ``torch.onnx.export`` (ops defined in this process only)."""
    table = {}
    for entry in forms(as_ops).values():
        if entry.kind == "onnx":
            table.update(dict.fromkeys(entry.overloads(), entry.function))
    return table


def decomposition_table(as_ops: bool) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """Decompositions to run on the ``ExportedProgram`` before the ONNX translation."""
    table = {}
    for entry in forms(as_ops).values():
        if entry.kind == "decompose":
            table.update(dict.fromkeys(entry.overloads(), entry.function))
    return table


def op_qualname(target: Any) -> str | None:
    """``namespace::name`` of an ``OpOverload`` target, else ``None``."""
    if isinstance(target, torch._ops.OpOverload):
        return target.name().split(".")[0]
    return None


def source_line(node: Node) -> str:
    """The innermost user frame of ``node.meta["stack_trace"]`` as ``file:line in fn: code``, or ``"?"``."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else ""
            return f"{lines[i].removeprefix('File ')}: {code}".rstrip(": ")
    return "?"


def untranslatable_nodes(gm: GraphModule, as_ops: bool) -> dict[str, list[Node]]:
    """Nodes whose op has no ONNX form: custom ops (any namespace but aten/prims) without a registered entry.

    Returns:
        op name -> the nodes calling it (empty when everything can be exported).
    """
    known = {target for entry in forms(as_ops).values() for target in entry.overloads()}
    missing: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_qualname(node.target)
        if name is None or name.split("::")[0] in TORCH_NAMESPACES or node.target in known:
            continue
        missing.setdefault(name, []).append(node)
    return missing


def plugin_ops(gm: GraphModule, as_ops: bool) -> list[str]:
    """TensorRT plugin op types an export of ``gm`` will contain."""
    chosen = forms(as_ops)
    found = {chosen[n].plugin for n in (op_qualname(x.target) for x in gm.graph.nodes if x.op == "call_function")
             if n in chosen and chosen[n].plugin}
    return sorted(p for p in found if p)
