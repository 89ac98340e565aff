"""``ort`` and ``ort-fp8``: export the optimised graph to ONNX and run it with ONNX Runtime.

The ONNX file is what :func:`recfx.export_onnx` writes (``ort-fp8``: FP8 Q/DQ), with ``recfx::ksa_attention`` as
standard ONNX ops since ONNX Runtime has no kernel for the TensorRT plugin node. Files are cached on disk under
``$RECFX_CACHE_DIR/onnx`` (default ``~/.cache/recfx/onnx``), keyed by a hash of the graph code, its constants and
the export options, and written atomically. A manifest beside each file records the key and the SHA-256 of the
file's bytes: a cached file is run only when its content still matches (else it is exported again), and a file
that ONNX Runtime refuses is removed. Sessions are cached per file content and provider.

``backend_options``: ``provider`` (``"auto"``: CUDA when onnxruntime-gpu is installed, else CPU; ``"cpu"``;
``"cuda"``), ``opset`` (21), ``cache_dir``, ``optimize`` (True).

Example:
    >>> import torch, recfx
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    >>> fast = recfx.compile(model, (torch.randn(4, 8),), backend="ort")
    >>> fast(torch.randn(3, 8)).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule

from recfx.backends.base import Availability, Backend, register_backend
from recfx.passes.base import PassContext

log = logging.getLogger(__name__)

_OPTIONS = ("provider", "opset", "cache_dir", "optimize")


def default_cache_dir() -> Path:
    """``$RECFX_CACHE_DIR/onnx``, else ``~/.cache/recfx/onnx``."""
    root = os.environ.get("RECFX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "recfx")
    return Path(root) / "onnx"


def graph_key(gm: GraphModule, specs: Any, options: dict[str, Any]) -> str:
    """SHA-256 of what the exported file depends on: graph code, constants (name, dtype, shape, bytes), input
    specs, export options and library versions."""
    import onnx
    import onnxscript

    from recfx._version import __version__
    from recfx.onnx.metadata import tensor_bytes

    digest = hashlib.sha256()
    digest.update(gm.code.encode())
    targets = sorted({str(n.target) for n in gm.graph.nodes if n.op == "get_attr"})
    for target in targets:
        value: Any = gm
        for part in target.split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):
            digest.update(f"{target}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(tensor_bytes(value))
    meta = {"specs": [str(s) for s in specs], "options": options, "versions": [__version__, torch.__version__,
            onnx.__version__, onnxscript.__version__]}
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def ort_availability() -> Availability:
    for module, pip in (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("onnxscript", "onnxscript")):
        if importlib.util.find_spec(module) is None:
            return Availability(False, f"{module} is not installed (pip install {pip})")
    return Availability(True)


@register_backend("ort")
class OrtBackend(Backend):
    priority = 5
    description = "exports the optimised graph to ONNX and runs it with ONNX Runtime (CUDA provider when installed, " \
                  "else CPU), I/O binding for torch tensors"

    def availability(self) -> Availability:
        return ort_availability()

    def compile(self, gm: GraphModule, ctx: PassContext) -> Callable[..., Any]:
        from recfx.onnx.config import OnnxExportConfig
        from recfx.onnx.export import onnx_model
        from recfx.onnx.session import OrtRunner, providers_for
        from recfx.onnx.write import write_model

        options = self.options(ctx, _OPTIONS)
        providers = providers_for(options.get("provider", "auto"))
        captured = ctx.captured
        if captured is None:
            raise ValueError(f"the {self.name} backend needs the captured graph's input/output specs "
                             "(ctx.captured); call it through recfx.compile")
        config = OnnxExportConfig(opset=int(options.get("opset", 21)), fp8=self.fp8, ksa_as_ops=True,
                                  optimize=bool(options.get("optimize", True)), lint="off")
        key = graph_key(gm, captured.input_specs, config.to_dict())
        folder = Path(options.get("cache_dir") or default_cache_dir())
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key[:32]}.onnx"
        digest = cached_digest(path, key)
        if digest is not None:
            log.info("%s: reusing %s", self.name, path)
        else:
            model = onnx_model(gm, tuple(ctx.example_inputs), captured.input_specs, captured.output_specs, config)
            write_model(model, path, lint="off")
            digest = write_manifest(path, key)
            log.info("%s: exported %s", self.name, path)
        try:
            return OrtRunner(path, [s.name for s in captured.input_specs], [s.name for s in captured.output_specs],
                             out_spec=getattr(gm, "_out_spec", None), providers=providers, key=digest)
        except Exception:  # ONNX Runtime refused the file: never leave it in the cache for the next compile
            discard(path)
            raise


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_digest(path: Path, key: str) -> str | None:
    """The content digest of a cached file when it is the graph ``key`` names, else ``None`` (export again).

    The manifest beside the file records the full graph key and the SHA-256 of the file's bytes (and of its
    external data); a file whose bytes no longer match, or that has no manifest, is never run.
    """
    from recfx.onnx.session import model_digest

    manifest = _manifest(path)
    if not path.is_file() or not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        record = None
    digest = model_digest(path)
    if not isinstance(record, dict) or record.get("key") != key or record.get("sha256") != digest:
        log.warning("ignoring cached %s: its content is not the graph it is named after; exporting it again", path)
        return None
    return digest


def write_manifest(path: Path, key: str) -> str:
    """Record (atomically) that ``path`` holds the graph ``key``; returns the file's content digest."""
    from recfx.onnx.session import model_digest

    digest = model_digest(path)
    manifest = _manifest(path)
    tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "sha256": digest}))
    os.replace(tmp, manifest)
    return digest


def discard(path: Path) -> None:
    """Remove a cached file, its external data and its manifest."""
    for p in (path, path.with_name(path.name + ".data"), _manifest(path)):
        p.unlink(missing_ok=True)


@register_backend("ort-fp8")
class OrtFp8Backend(OrtBackend):
    fp8 = True
    priority = 5
    description = "FP8 (E4M3) post-training quantization, then ONNX (QuantizeLinear/DequantizeLinear) on ONNX Runtime"
