"""Write an ONNX model atomically, after ``onnx.checker`` (full check) and the TensorRT-rules linter pass.

The model is saved into a hidden temporary folder beside the target, checked and linted there, and only then
moved into place (with its external-data file when it is larger than protobuf's 2 GiB limit allows). Any failure
removes the temporary folder: no partial file is ever left at ``path``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from recfx.onnx.lint import LintReport, OnnxLintError, lint_model

log = logging.getLogger(__name__)

#: Above this many bytes of initializers, weights go to an external ``<file>.data`` (protobuf's limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30


def _initializer_bytes(model: Any) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def write_model(model: Any, path: str | Path, *, lint: str = "warn") -> tuple[LintReport | None, dict[str, int]]:
    """Save ``model`` (an ``onnx_ir.Model``) to ``path`` if it passes the checks.

    Args:
        model: the model to write.
        path: target ``.onnx`` file; its folder must exist and be writable.
        lint: ``"warn"`` (log violations), ``"strict"`` (violations raise, nothing is written) or ``"off"``.

    Returns:
        ``(lint report or None, op histogram)``.

    Raises:
        onnx.checker.ValidationError: the model is not valid ONNX (nothing written).
        OnnxLintError: ``lint="strict"`` and the linter found violations (nothing written).
    """
    import onnx_ir as ir

    from recfx.onnx.ir_passes import op_histogram

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmpdir = Path(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.tmp-"))
    try:
        tmp = tmpdir / path.name
        external = f"{path.name}.data" if _initializer_bytes(model) > EXTERNAL_DATA_BYTES else None
        ir.save(model, tmp, external_data=external)
        onnx.checker.check_model(str(tmp), full_check=True)
        proto = onnx.load(str(tmp), load_external_data=False)
        report = None
        if lint != "off":
            report = lint_model(proto, base_dir=tmpdir)
            if lint == "strict" and not report.ok:
                raise OnnxLintError(f"{path.name} breaks TensorRT's explicit-quantization rules; nothing was "
                                    f"written (use lint='warn' to write it anyway):\n{report.render()}")
            for finding in report.findings:
                log.warning("%s", finding)
        for name in os.listdir(tmpdir):
            os.replace(tmpdir / name, folder / name)
        return report, op_histogram(proto)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
