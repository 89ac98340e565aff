"""Removal of operations that do nothing at inference time."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from recfx.passes.base import PassResult, register_pass
from recfx.passes.utils import (
    alias_root,
    fetch_attr,
    finish,
    mutated_values,
    returns_alias,
    same_shape,
    static_shape,
    tensor_meta,
)

log = logging.getLogger(__name__)
aten = torch.ops.aten
_INT64_MAX = 2**63 - 1


def _arg(node: Node, i: int, name: str, default: object = None) -> object:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _dropout_noop(node: Node) -> bool:
    return _arg(node, 2, "train", True) is False or _arg(node, 1, "p", 0.5) == 0


def _same_shape_as_input(node: Node) -> bool:
    return same_shape(node, node.args[0])


def _identity_permute(node: Node) -> bool:
    dims = _arg(node, 1, "dims")
    if not isinstance(dims, (list, tuple)):
        return False
    rank = len(dims)
    return [d % rank for d in dims] == list(range(rank))


def _full_slice(node: Node) -> bool:
    dim = _arg(node, 1, "dim", 0)
    start, end, step = _arg(node, 2, "start", None), _arg(node, 3, "end", None), _arg(node, 4, "step", 1)
    if step != 1 or start not in (None, 0):
        return False
    if end is None or end == _INT64_MAX:
        return True
    shape = static_shape(node.args[0])
    return shape is not None and isinstance(end, int) and isinstance(dim, int) and end >= shape[dim]


def _same_dtype_copy(node: Node) -> bool:
    src, out = tensor_meta(node.args[0]), tensor_meta(node)
    if src is None or out is None:
        return False
    if node.kwargs.get("memory_format") not in (None, torch.preserve_format):
        return False
    return src.dtype == out.dtype and src.device == out.device and same_shape(node, node.args[0])


def _neutral_scalar(value: float) -> Callable[[Node], bool]:
    def check(node: Node) -> bool:
        other = node.args[1] if len(node.args) > 1 else None
        if isinstance(other, Node) or other != value or node.kwargs.get("alpha", 1) != 1:
            return False
        src, out = tensor_meta(node.args[0]), tensor_meta(node)
        return src is not None and out is not None and src.dtype == out.dtype and same_shape(node, node.args[0])

    return check


def _always(node: Node) -> bool:
    return True


#: Ops whose result is a newly allocated, contiguous tensor whatever the strides of their inputs (the GEMMs allocate
#: a row-major result; embedding gathers rows into a new tensor).
_FRESH_CONTIGUOUS = frozenset({
    aten.linear.default, aten.mm.default, aten.addmm.default, aten.bmm.default, aten.embedding.default,
})
#: Views that keep a contiguous input contiguous (they only regroup or add/drop size-1 dims).
_CONTIGUITY_KEEPING_VIEWS = frozenset({
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.flatten.using_ints,
    aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
})
_CONTIGUOUS_FORMATS = (None, torch.contiguous_format, torch.preserve_format)


def always_contiguous(node: object, _depth: int = 0) -> bool:
    """True when ``node``'s tensor is contiguous for every input the graph accepts (any strides, any dynamic size).

    Graph inputs may come with any strides, so only values made contiguous by construction qualify: results of
    :data:`_FRESH_CONTIGUOUS` ops and kept ``contiguous()``/``clone(contiguous_format)`` nodes, contiguous constants,
    contiguity-keeping views of such values, and pointwise ops whose tensor inputs all qualify and have the
    result's shape (TensorIterator then lays the result out row-major).
    """
    if not isinstance(node, Node) or _depth > 64:
        return False
    if node.op == "get_attr":
        owner = node.graph.owning_module
        value = fetch_attr(owner, str(node.target)) if owner is not None else None
        return isinstance(value, torch.Tensor) and value.is_contiguous()
    if node.op != "call_function":
        return False  # placeholders: the caller chooses the strides
    target = node.target
    if target in _FRESH_CONTIGUOUS:
        return True
    if target is aten.contiguous.default:
        return node.kwargs.get("memory_format", _arg(node, 1, "memory_format")) in _CONTIGUOUS_FORMATS
    if target is aten.clone.default and node.kwargs.get("memory_format") is torch.contiguous_format:
        return True
    if target in _CONTIGUITY_KEEPING_VIEWS or target is aten.clone.default or target is aten.contiguous.default:
        return always_contiguous(node.args[0], _depth + 1)
    if isinstance(target, torch._ops.OpOverload) and torch.Tag.pointwise in target.tags:
        tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, Node)]
        return bool(tensors) and all(_is_0d(a) or (same_shape(a, node) and always_contiguous(a, _depth + 1))
                                     for a in tensors)
    return False


def _is_0d(node: Node) -> bool:
    val = tensor_meta(node)
    return val is not None and val.dim() == 0


def _copy_of_contiguous(node: Node) -> bool:
    """``contiguous()`` / ``clone()`` return an equal contiguous tensor: a no-op only where the input is already
    contiguous for every allowed input (else a later ``view`` would meet the strides it needed gone)."""
    memory_format = node.kwargs.get("memory_format", _arg(node, 1, "memory_format"))
    return memory_format in _CONTIGUOUS_FORMATS and always_contiguous(node.args[0])


def _transpose_same_dim(node: Node) -> bool:
    return _arg(node, 1, "dim0") == _arg(node, 2, "dim1")


def _t_of_vector(node: Node) -> bool:
    val = tensor_meta(node.args[0])
    return val is not None and val.dim() < 2


#: op -> the condition under which it returns its first argument unchanged.
NOOP_RULES: dict[object, Callable[[Node], bool]] = {
    aten.dropout.default: _dropout_noop,
    aten.feature_dropout.default: _dropout_noop,
    aten.alpha_dropout.default: _dropout_noop,
    aten.alias.default: _always,
    aten.clone.default: _copy_of_contiguous,
    aten.contiguous.default: _copy_of_contiguous,
    aten.lift_fresh_copy.default: _always,
    aten.detach.default: _always,
    aten.view.default: _same_shape_as_input,
    aten.reshape.default: _same_shape_as_input,
    aten._unsafe_view.default: _same_shape_as_input,
    aten.expand.default: _same_shape_as_input,
    aten.flatten.using_ints: _same_shape_as_input,
    aten.permute.default: _identity_permute,
    aten.transpose.int: _transpose_same_dim,
    aten.t.default: _t_of_vector,
    aten.slice.Tensor: _full_slice,
    aten._to_copy.default: _same_dtype_copy,
    aten.to.dtype: _same_dtype_copy,
    aten.type_as.default: _same_dtype_copy,
    aten.mul.Tensor: _neutral_scalar(1),
    aten.mul.Scalar: _neutral_scalar(1),
    aten.div.Tensor: _neutral_scalar(1),
    aten.div.Scalar: _neutral_scalar(1),
    aten.add.Tensor: _neutral_scalar(0),
    aten.add.Scalar: _neutral_scalar(0),
    aten.sub.Tensor: _neutral_scalar(0),
    aten.sub.Scalar: _neutral_scalar(0),
}


#: Ops that return a new tensor: removing one makes its users share the input's storage.
_COPIES = frozenset({aten.clone.default, aten.contiguous.default, aten.lift_fresh_copy.default,
                     aten._to_copy.default})


def _returns_input_alias(node: Node) -> bool:
    """Removing the node would make a graph output the very tensor the caller passed in, or (for a copy) a tensor
    that shares storage with a constant or with another output."""
    src = node.args[0]
    outputs = [u for u in node.users if u.op == "output"]
    if not isinstance(src, Node) or not outputs:
        return False
    if src.op == "placeholder":
        return True
    if node.target not in _COPIES:
        return False
    root = alias_root(src)
    if root.op in ("placeholder", "get_attr"):
        return True
    others = [v for v in torch.utils._pytree.tree_leaves(outputs[0].args[0]) if isinstance(v, Node) and v is not node]
    return any(alias_root(v) is root for v in others)


@register_pass("remove_noops", stage="canonicalize")
def remove_noops(gm: GraphModule) -> PassResult:
    """No eval-mode dropout, alias, provably redundant clone/contiguous/copy, identity view/slice/permute or x*1, x+0
    remains.

    A ``clone``/``contiguous`` goes only where its input is contiguous for every allowed input (see
    :func:`always_contiguous`), neither tensor is written in place, and no output would share storage with an input,
    a constant or another output because of it.
    """
    removed = 0
    mutated = mutated_values(gm)
    for node in list(gm.graph.nodes):
        rule = NOOP_RULES.get(node.target) if node.op == "call_function" else None
        if rule is None or not node.args or not isinstance(node.args[0], Node):
            continue
        if not returns_alias(node) and (node in mutated or node.args[0] in mutated):
            continue  # a copy (clone, x * 1...) of a value written in place is not a no-op; an alias is the storage
        if not rule(node) or _returns_input_alias(node):
            continue
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        removed += 1
    if removed:
        finish(gm)
    log.debug("remove_noops removed %d nodes", removed)
    return PassResult(gm, modified=removed > 0, changed_nodes=removed)
