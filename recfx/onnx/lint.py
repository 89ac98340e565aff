"""A linter for TensorRT's explicit-quantization rules (``../shared/specs/fp8.md``) on ONNX files.

TensorRT builds a strongly typed FP8 network from Q/DQ nodes only when they sit where it can fuse them. This
linter reads an ONNX model and lists, node by node, what TensorRT would not fuse (or would reject) and why. Rules
(ids used in the findings; each is a function in ``lint_rules.py``):

============== ===========================================================================================
opset          FP8 Q/DQ need ai.onnx opset >= 19
fp8-format     Q/DQ data in FLOAT8E4M3FN (or INT8); a QuantizeLinear without an FP8 zero point emits UINT8
zero-point     zero points are constants equal to 0
scale          scales are static initializers (or Constants), finite and > 0; per-tensor on activations;
               per-channel weights use axis = the GEMM's output channel; no blocked FP8 scales
qdq-pair       every QuantizeLinear feeds DequantizeLinear nodes with the same scale
qdq-placement  every DequantizeLinear reaches a GEMM input (MatMul/Gemm/Conv) through data-movement ops only
gemm-inputs    a GEMM with one quantized input has the other quantized too (else it runs in high precision)
weights        FP8 weight initializers are read only through DequantizeLinear (pre-quantized, DQ-only)
epilogue       no Q/DQ between a GEMM and its bias / residual add (it blocks the epilogue fusion)
plugin         custom-domain nodes are TensorRT plugins: op_type not a standard ONNX op, string attributes
               plugin_version and plugin_namespace
============== ===========================================================================================

Example:
    >>> from onnx import helper as h, TensorProto as T
    >>> g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, [2])],
    ...                  [h.make_tensor_value_info("y", T.FLOAT, [2])])
    >>> lint_model(h.make_model(g, opset_imports=[h.make_opsetid("", 21)])).ok
    True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from recfx.errors import RecfxError
from recfx.onnx.external import check_external_data

#: GEMM-like ops TensorRT fuses Q/DQ into, and which of their inputs are the quantizable operands.
GEMM_INPUTS: dict[str, tuple[int, ...]] = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1), "ConvTranspose": (0, 1)}
#: Ops TensorRT moves Q/DQ across (data movement, no arithmetic).
TRANSPARENT = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast"})
QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
TRT_FP8_TYPES = frozenset({onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.INT8})


class OnnxLintError(RecfxError):
    """``lint="strict"`` (or ``recfx lint-onnx --strict``) and the model breaks TensorRT's rules."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One rule violation at one node: ``message`` says what TensorRT would do with it and why."""

    rule: str
    node: str
    op_type: str
    message: str
    severity: str = "warning"  # "error": TensorRT rejects the network; "warning": it builds but does not fuse

    def __str__(self) -> str:
        return f"[{self.rule}] {self.severity}: {self.op_type} {self.node!r}: {self.message}"


@dataclasses.dataclass
class LintReport:
    """The linter's findings and what it looked at.

    Attributes:
        findings: rule violations, in graph order per rule.
        counts: ``{"QuantizeLinear": n, "DequantizeLinear": n, "gemms": n, "quantized_gemms": n, "plugins": n}``.
    """

    findings: list[Finding]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.findings

    def by_rule(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.rule] = out.get(f.rule, 0) + 1
        return out

    def headline(self) -> str:
        c = self.counts
        what = (f"{c.get('QuantizeLinear', 0)} Q, {c.get('DequantizeLinear', 0)} DQ, "
                f"{c.get('quantized_gemms', 0)}/{c.get('gemms', 0)} GEMMs quantized, {c.get('plugins', 0)} plugins")
        if self.ok:
            return f"TensorRT rules: OK ({what})"
        rules = ", ".join(f"{r} {n}" for r, n in sorted(self.by_rule().items()))
        return f"TensorRT rules: {len(self.findings)} violation(s) [{rules}] ({what})"

    def render(self) -> str:
        return "\n".join([self.headline(), *(f"  {f}" for f in self.findings)])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts, "findings": [dataclasses.asdict(f) for f in self.findings]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class GraphIndex:
    """Producers, consumers, constants and types of one ONNX graph, for the rules."""

    def __init__(self, model: onnx.ModelProto, base_dir: str | Path | None = None) -> None:
        self.model = model
        self.graph = model.graph
        self.base_dir = str(base_dir) if base_dir is not None else ""
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
        self.outputs = {o.name for o in self.graph.output}
        self.types = {vi.name: vi.type.tensor_type.elem_type
                      for vi in (*self.graph.value_info, *self.graph.input, *self.graph.output)}

    def nodes(self, *op_types: str) -> Iterator[onnx.NodeProto]:
        return (n for n in self.graph.node if n.domain in ("", "ai.onnx") and (not op_types or n.op_type in op_types))

    def is_constant(self, name: str) -> bool:
        """An initializer or the output of a ``Constant`` node: what TensorRT treats as static."""
        node = self.producer.get(name)
        return name in self.initializers or (node is not None and node.op_type == "Constant")

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a static tensor, else ``None``.

        Raises:
            ValueError: the tensor is malformed, or its external data is not a file inside ``base_dir``.
        """
        if name in self.initializers:
            tensor = self.initializers[name]
            return _to_array(tensor, self.base_dir)
        node = self.producer.get(name)
        if node is None or node.op_type != "Constant":
            return None
        value = attr(node, "value")
        if isinstance(value, onnx.TensorProto):
            return _to_array(value, self.base_dir)
        for key in ("value_float", "value_int", "value_floats", "value_ints"):
            value = attr(node, key)
            if value is not None and not isinstance(value, onnx.TensorProto):
                return np.array(value)
        return None

    def elem_type(self, name: str) -> int | None:
        """The element type of a tensor when the file records it (initializers, value_info, inputs/outputs)."""
        if name in self.initializers:
            return self.initializers[name].data_type
        if name in self.types:
            return self.types[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return a.t.data_type
        if node is not None and node.op_type == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
            return self.elem_type(zp) if zp else attr(node, "output_dtype", 0) or onnx.TensorProto.UINT8
        return None

    def source(self, name: str) -> tuple[str, list[onnx.NodeProto]]:
        """Walk up through data-movement ops: (the first non-transparent tensor name, the ops walked through)."""
        path = []
        node = self.producer.get(name)
        while node is not None and node.op_type in TRANSPARENT and node.input:
            path.append(node)
            name = node.input[0]
            node = self.producer.get(name)
        return name, path

    def sinks(self, name: str) -> list[tuple[onnx.NodeProto, int, list[onnx.NodeProto]]]:
        """Walk down through data-movement ops: every (consumer, input index, ops walked through)."""
        out = []
        stack: list[tuple[str, list[onnx.NodeProto]]] = [(name, [])]
        while stack:
            value, path = stack.pop()
            for node, i in self.consumers.get(value, []):
                if node.op_type in TRANSPARENT and i == 0:
                    stack += [(o, [*path, node]) for o in node.output]
                else:
                    out.append((node, i, path))
        return out


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """A node attribute's value (``default`` when absent).

    Raises:
        ValueError: the attribute holds no value of a type ONNX defines (a corrupt file).
    """
    for a in node.attribute:
        if a.name == name:
            try:
                return onnx.helper.get_attribute_value(a)
            except ValueError:  # its message prints the whole attribute, tensors included
                raise ValueError(f"{_short(node.op_type)} node {_short(node.name)}: attribute {_short(name)} has no "
                                 f"value of a known type (type code {a.type}); the file is corrupt") from None
    return default


def _short(text: str, limit: int = 60) -> str:
    """A name from a file, quoted and cut to ``limit`` characters for one-line messages."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _to_array(tensor: onnx.TensorProto, base_dir: str | None) -> np.ndarray:
    try:
        return numpy_helper.to_array(tensor, base_dir=base_dir or "")
    except (ValueError, TypeError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"tensor {_short(tensor.name)} cannot be read ({first[:120]}); the file is corrupt or "
                         "cut short") from None


def load_for_lint(path: str | Path) -> onnx.ModelProto:
    """Read an ``.onnx`` file without its external data and check that it is a whole model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty, not ONNX, cut short (no graph, IR version, opset import or graph output) or failing
            ``onnx.checker``.
    """
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise ValueError(f"{path} is not an ONNX model, or is cut short ({str(err).splitlines()[0][:120]})") from None
    _check_whole(model, str(path), path)
    return model


def _check_whole(model: onnx.ModelProto, what: str, path: Path | None = None) -> None:
    """Protobuf reads a file cut at a field boundary without complaint; a whole model has all of these."""
    missing = [part for part, present in (("an IR version", model.ir_version > 0),
                                          ("a graph", model.HasField("graph")),
                                          ("an opset import", len(model.opset_import) > 0),
                                          ("graph outputs", len(model.graph.output) > 0)) if not present]
    if missing:
        raise ValueError(f"{what} is not a whole ONNX model (it has no {', no '.join(missing)}): the file is cut "
                         "short or is not ONNX; export it again")
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if path is not None:
        check_external_data(model, path.parent)  # before onnx.checker, which would read them
    elif external:
        return  # the checker would look for them in the working folder; the rules check each one they read
    try:  # node arities, attribute and tensor types: what the rules rely on
        onnx.checker.check_model(str(path) if path is not None else model)
    except onnx.checker.ValidationError as err:  # only its first line: the rest prints the node, tensors included
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid"
        raise ValueError(f"{what} is not a valid ONNX model ({first[:160]}); export it again") from None


def lint_model(model: onnx.ModelProto | str | Path, *, base_dir: str | Path | None = None) -> LintReport:
    """Check an ONNX model against TensorRT's explicit-quantization and plugin rules.

    Args:
        model: a ``ModelProto`` or the path of an ``.onnx`` file.
        base_dir: folder of external-data files (default: the file's folder).

    Returns:
        A :class:`LintReport`; ``report.ok`` when TensorRT would fuse every Q/DQ as placed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, not ONNX, cut short or corrupt.
        ExternalDataError: external data outside the model's folder (see :mod:`recfx.onnx.external`).
    """
    from recfx.onnx import lint_rules

    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        base_dir = base_dir if base_dir is not None else path.parent
        model = load_for_lint(path)
    else:
        _check_whole(model, "the model")
    check_external_data(model, base_dir if base_dir is not None else ".")
    index = GraphIndex(model, base_dir)
    findings: list[Finding] = []
    for rule in lint_rules.RULES:
        findings += rule(index)
    return LintReport(findings, lint_rules.counts(index))


Rule = Callable[[GraphIndex], list[Finding]]
