"""``OnnxExportConfig``: the options of :func:`recfx.export_onnx`, in one frozen, validated object."""

from __future__ import annotations

import dataclasses

from recfx.config import ConfigBase

#: FP8 Q/DQ exports need opset 21 (FLOAT8E4M3FN zero points, blocked and per-axis FP8 Q/DQ).
MIN_FP8_OPSET = 21
#: Opsets the exporter accepts (torch.onnx's translations target 18 and convert upwards).
MIN_OPSET, MAX_OPSET = 18, 23
LINT_MODES = ("warn", "strict", "off")


@dataclasses.dataclass(frozen=True)
class OnnxExportConfig(ConfigBase):
    """Options of :func:`recfx.export_onnx`.

    Attributes:
        opset: ONNX opset of the default domain (>= 21 when the graph holds FP8 ops).
        fp8: quantize to FP8 (when given an ``nn.Module``: compile with ``eager-fp8``; when given a compiled module:
            require its graph to be quantized).
        static_activations: FP8 activations with calibrated per-tensor scales instead of dynamic per-token scales
            (needs calibration data; what TensorRT fuses best).
        ksa_as_ops: export ``recfx::ksa_attention`` as standard ONNX ops instead of the ``KsaAttention`` plugin node.
        dynamic: keep the compiled module's dynamic dims (batch, ...) dynamic in the ONNX file.
        dynamic_dims: more dynamic dims than the batch when an ``nn.Module`` is compiled for the export, by input
            name: ``{"tokens": {1: "seq"}}`` (a compiled module keeps its own).
        optimize: run onnxscript's optimizer (constant folding, CSE; Q/DQ nodes are kept).
        lint: ``"warn"`` (report TensorRT rule violations), ``"strict"`` (violations are errors, nothing is
            written) or ``"off"``.
        model_name: recorded in the file's metadata (default: the model's class name).
    """

    opset: int = MIN_FP8_OPSET
    fp8: bool = False
    static_activations: bool = False
    ksa_as_ops: bool = False
    dynamic: bool = True
    dynamic_dims: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    optimize: bool = True
    lint: str = "warn"
    model_name: str | None = None

    def validate(self) -> None:
        if not isinstance(self.opset, int) or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset must be an int in [{MIN_OPSET}, {MAX_OPSET}], got {self.opset!r}")
        if self.fp8 and self.opset < MIN_FP8_OPSET:
            raise ValueError(f"FP8 export needs opset >= {MIN_FP8_OPSET} (FLOAT8E4M3FN QuantizeLinear/"
                             f"DequantizeLinear with per-axis and blocked scales), got opset {self.opset}; "
                             f"use opset={MIN_FP8_OPSET}")
        if self.static_activations and not self.fp8:
            raise ValueError("static_activations only applies to FP8 exports; set fp8=True as well")
        if self.lint not in LINT_MODES:
            raise ValueError(f"lint must be one of {LINT_MODES}, got {self.lint!r}")
        if not isinstance(self.dynamic_dims, dict) or not all(
                isinstance(dims, dict) and all(isinstance(d, int) and isinstance(n, str) and n.isidentifier()
                                               for d, n in dims.items()) for dims in self.dynamic_dims.values()):
            raise TypeError(f"dynamic_dims maps input names to {{dim index: symbol name}}, e.g. "
                            f"{{'tokens': {{1: 'seq'}}}}; got {self.dynamic_dims!r}")
        if self.dynamic_dims and not self.dynamic:
            raise ValueError("dynamic_dims were given with dynamic=False; drop one of them")

