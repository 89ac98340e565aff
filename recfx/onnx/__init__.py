"""ONNX export of recfx's optimised graphs (FP8 Q/DQ, TensorRT plugin nodes) and a TensorRT-rules linter.

    >>> from recfx.onnx import OnnxExportConfig
    >>> OnnxExportConfig(fp8=True).opset
    21
"""

from recfx.onnx.config import OnnxExportConfig
from recfx.onnx.export import (
    OnnxExport,
    OnnxExportError,
    check_writable,
    export_onnx,
    has_fp8,
    onnx_model,
)
from recfx.onnx.lint import Finding, LintReport, OnnxLintError, lint_model
from recfx.onnx.metadata import read_metadata
from recfx.onnx.translate import register_translation

__all__ = [
    "Finding", "LintReport", "OnnxExport", "OnnxExportConfig", "OnnxExportError", "OnnxLintError", "check_writable",
    "export_onnx", "has_fp8", "lint_model", "onnx_model", "read_metadata", "register_translation",
]
