"""External data of an ONNX file is read only from inside the file's folder.

A tensor stored outside the ``.onnx`` file names its data file in ``external_data["location"]``. A file from
elsewhere may point that at ``../../secret``, an absolute path, or a symlink leading out of the folder; reading it
would disclose (or feed the model) whatever lies there. :func:`check_external_data` refuses such a file before any
byte of external data is read; ``onnx`` (>= 1.21) and ONNX Runtime check the same on their side.

Example:
    >>> import onnx
    >>> check_external_data(onnx.ModelProto(), ".")  # no external tensors: nothing to refuse
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx

from recfx.errors import RecfxError


class ExternalDataError(RecfxError, ValueError):
    """An ONNX file refers to external data outside its own folder (a ``../`` or absolute path, or a symlink)."""


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _tensors(sub)


def check_external_data(model: onnx.ModelProto, base_dir: str | Path) -> None:
    """Raise :class:`ExternalDataError` unless every external-data location of ``model`` is a plain file inside
    ``base_dir`` (the model's folder), reached without symlinks.

    Raises:
        ExternalDataError: a location that is absolute, climbs out with ``..``, or passes through a symlink.
    """
    base = Path(base_dir).resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        rel = Path(location)
        problem = None
        if not location or rel.is_absolute() or ".." in rel.parts:
            problem = "is not a path inside the model's folder"
        else:
            step = Path(base_dir)
            for part in rel.parts:
                step = step / part
                if step.is_symlink():
                    problem = f"goes through the symlink {step}"
                    break
            else:
                if not (base / rel).resolve().is_relative_to(base):
                    problem = "leads out of the model's folder"
        if problem:
            raise ExternalDataError(
                f"refusing to load: tensor {tensor.name!r} keeps its data at {location!r}, which {problem} "
                f"({base}). recfx reads external data only from plain files beside the .onnx file; re-export the "
                "model or move its data file there.")
