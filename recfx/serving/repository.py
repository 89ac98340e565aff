"""``export_triton``: a Triton model repository (``config.pbtxt`` + model files) for a stock ``tritonserver``.

One model folder per compiled module, version ``1``:
- ``ort`` / ``ort-fp8`` modules: the ONNX file (and its external data) for Triton's ONNX Runtime backend;
- every other bundle format (AOTInductor package, exported program): the recfx bundle in ``1/bundle`` and a
  ``model.py`` for Triton's Python backend that loads it with :func:`recfx.load` (``recfx`` and ``torch`` must be
  importable by the Python-backend stub).

``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf message (from ``tritonclient``), written in text
format and parsed back before the repository is renamed into place: it holds the signature of
:mod:`recfx.serving.signature`, ``max_batch_size``, ``dynamic_batching`` and ``instance_group`` from
:class:`~recfx.serving.config.ModelServing`. TensorRT plans are not exported (the TensorRT backends have never run).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path

from recfx.errors import RecfxError
from recfx.runtime.bundle import MANIFEST, atomic_folder, read_manifest
from recfx.runtime.compiled import CompiledModule
from recfx.serving.config import ModelServing
from recfx.serving.server import MODEL_NAME
from recfx.serving.signature import TritonSignature, TritonTensor, signature, unbatched_reason

#: Python-backend model file, copied next to each non-ONNX bundle
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


def model_config_proto() -> types.ModuleType:
    """``tritonclient``'s ``model_config_pb2`` (Triton's config schema), or a ``RecfxError`` saying how to get it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as err:
        raise RecfxError(f"export-triton builds config.pbtxt with Triton's own schema from tritonclient, which is not "
                         f"importable here ({err}); install the serve extra (pip install 'recfx[serve]', or "
                         "`make serve-venv`)") from None
    return model_config_pb2


def model_config(name: str, sig: TritonSignature, serving: ModelServing, *, backend: str, gpu: bool,
                 model_file: str | None = None) -> str:
    """The ``config.pbtxt`` text of one model, parsed back through the schema before it is returned.

    Raises:
        ValueError: dynamic batching asked of a model that cannot be batched.
    """
    pb = model_config_proto()
    from google.protobuf import text_format

    if serving.dynamic_batching and not sig.batched:
        raise ValueError(f"model {name!r} cannot be dynamically batched; export it without dynamic batching")
    config = pb.ModelConfig(name=name, backend=backend, max_batch_size=serving.max_batch if sig.batched else 0)
    if model_file:
        config.default_model_filename = model_file

    def add(field: object, t: TritonTensor) -> None:
        entry = field.add()  # type: ignore[attr-defined]
        entry.name = t.name
        entry.data_type = pb.DataType.Value(f"TYPE_{t.triton_dtype}")
        entry.dims.extend(t.dims)

    for t in sig.inputs:
        add(config.input, t)
    for t in sig.outputs:
        add(config.output, t)
    if serving.dynamic_batching:
        config.dynamic_batching.SetInParent()  # present even with a zero delay
        config.dynamic_batching.max_queue_delay_microseconds = serving.queue_delay_us
    group = config.instance_group.add()
    group.count = serving.instances
    group.kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    text = text_format.MessageToString(config)
    text_format.Parse(text, pb.ModelConfig())  # the written text is what Triton will parse
    return text


def _bundle_of(module: CompiledModule, scratch: Path, name: str) -> Path:
    if module.bundle_path is not None:
        read_manifest(module.bundle_path)  # the files are checked before they are copied
        return module.bundle_path
    return module.save(scratch / name)


def export_triton(models: Mapping[str, CompiledModule], out: str | os.PathLike[str],
                  serving: ModelServing | None = None, *, overwrite: bool = False) -> Path:
    """Write a Triton model repository holding ``models`` at ``out``; it appears complete or not at all.

    Args:
        models: Triton model name -> compiled module (compiled here, or loaded from a bundle).
        out: the repository folder to create.
        serving: ``max_batch``, dynamic batching and instance count of every model (default ``ModelServing()``).
        overwrite: replace an existing folder at ``out``.

    Returns:
        ``out``.

    Raises:
        RecfxError: ``tritonclient`` is missing (the config is built with its schema).
        ValueError: a bad model name, or dynamic batching of a model that cannot be batched.
        BundleUnsupportedError: a module whose backend cannot be saved as a bundle.
        FileExistsError: ``out`` exists and ``overwrite`` is False.

    Example (needs the ``serve`` extra)::

        >>> import recfx, torch
        >>> from recfx.serving.repository import export_triton
        >>> fast = recfx.compile(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), backend="eager")
        >>> export_triton({"linear": fast}, "/tmp/repo", overwrite=True)  # doctest: +SKIP
        PosixPath('/tmp/repo')
    """
    serving = serving or ModelServing()
    model_config_proto()  # fail before anything is written
    for name, module in models.items():
        if not MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} must start with a letter or digit and hold only letters, "
                             "digits, '_', '.', '-'")
        if serving.dynamic_batching and not signature(module).batched:
            raise ValueError(f"model {name!r} cannot be dynamically batched: {unbatched_reason(module)}; or export "
                             "it without dynamic batching")
    path = Path(out)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) or choose another folder")
    with tempfile.TemporaryDirectory() as scratch, atomic_folder(path, overwrite=overwrite) as tmp:
        for name, module in models.items():
            bundle = _bundle_of(module, Path(scratch), name)
            manifest = json.loads((bundle / MANIFEST).read_text())
            version = tmp / name / "1"
            version.mkdir(parents=True)
            gpu = manifest["device"]["type"] == "cuda"
            if manifest["format"] == "onnx":
                for file in manifest["files"]:
                    (version / file).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(bundle / file, version / file)
                text = model_config(name, signature(module), serving, backend="onnxruntime", gpu=gpu,
                                    model_file=manifest["model_file"])
            else:
                shutil.copytree(bundle, version / "bundle")
                shutil.copyfile(PYTHON_MODEL, version / "model.py")
                text = model_config(name, signature(module), serving, backend="python", gpu=gpu)
            (tmp / name / "config.pbtxt").write_text(text)
    return path
