"""How each backend's compiled code is written into a bundle and read back (see :mod:`recfx.runtime.bundle`).

Three formats, chosen by the backend's family:
- ``aoti``: an AOTInductor package (``torch._inductor.aoti_compile_and_package``) of the final graph, exported again
  with the module's dynamic dims; Inductor backends (``inductor``, ``inductor-fp8``, ``cuda-fp8``).
- ``onnx``: the ONNX file the backend runs (and its external data); ``ort``, ``ort-fp8``.
- ``exported``: ``torch.export.save`` of the final graph, run op by op on load; ``eager``, ``eager-fp8``.

Readers never unpickle: an exported program whose archive would make ``torch.export.load`` call ``torch.load``
(pickled tensor payloads, pickled sample inputs) is refused before it is opened.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim, ExportedProgram
from torch.utils._pytree import tree_flatten, tree_unflatten, treespec_loads

from recfx.backends import BACKENDS
from recfx.backends.eager import EagerBackend
from recfx.backends.inductor import InductorBackend, inductor_heuristics, keyed_options
from recfx.backends.ort import OrtBackend
from recfx.errors import RecfxError
from recfx.frontend.capture import TRACE_LOCK, TensorSpec

AOTI, ONNX, EXPORTED = "aoti", "onnx", "exported"
#: file names inside a bundle, per format (an ONNX bundle keeps the backend's file name, recorded in the manifest's
#: ``model_file``, since the model names its external data ``<file>.data`` inside the protobuf)
FILES = {AOTI: "model.pt2", ONNX: "model.onnx", EXPORTED: "program.pt2"}


class BundleError(RecfxError, ValueError):
    """A bundle cannot be written or loaded; the message says what is wrong and what to do."""


class BundleUnsupportedError(BundleError):
    """This compiled module's backend (or a piece of its graph) cannot be written as a bundle."""


def bundle_format(backend: str) -> str:
    """The bundle format of a registered backend.

    Raises:
        BundleUnsupportedError: a backend of none of the three families (e.g. a user's own backend).
    """
    cls = BACKENDS.get(backend)
    for family, fmt in ((InductorBackend, AOTI), (OrtBackend, ONNX), (EagerBackend, EXPORTED)):
        if issubclass(cls, family):
            return fmt
    raise BundleUnsupportedError(f"backend {backend!r} has no bundle format (bundles exist for the eager, Inductor "
                                 "and ONNX Runtime backends and their -fp8 forms); compile with one of those to save")


def export_final(gm: torch.fx.GraphModule, example_inputs: tuple[torch.Tensor, ...],
                 input_specs: list[TensorSpec]) -> ExportedProgram:
    """``torch.export`` of the optimised graph module, with the same named dynamic dims as the compiled module."""
    dims: dict[str, Any] = {}
    shapes: list[dict[int, Any] | None] = []
    for spec in input_specs:
        spec_dims: dict[int, Any] = {}
        for d, size in enumerate(spec.shape):
            if isinstance(size, str):
                if not size.isidentifier():
                    raise BundleUnsupportedError(f"input {spec.name!r} dim {d} is the expression {size!r}, not a "
                                                 "named dim; bundles keep named dynamic dims only")
                spec_dims[d] = dims.setdefault(size, Dim(size))
        shapes.append(spec_dims or None)
    with TRACE_LOCK:
        return torch.export.export(gm, tuple(example_inputs), dynamic_shapes=tuple(shapes), strict=False)


# --- writers: (module pieces, folder) -> None; they write FILES[fmt] (and companions) into ``folder``


def write_aoti(ep: ExportedProgram, folder: Path, persistent_rows: int = 0) -> None:
    """Compile ``ep`` with AOTInductor into ``folder/model.pt2``, with the in-process module's heuristics
    (``persistent_rows``: ``recfx.backends.inductor.inductor_heuristics``).

    ``recfx::`` ops without a C++ kernel stay calls through AOTInductor's proxy executor (the op is looked up in the
    dispatcher at run time: ``import recfx`` registers it).
    """
    with TRACE_LOCK, inductor_heuristics(persistent_rows):
        torch._inductor.aoti_compile_and_package(ep, package_path=str(folder / FILES[AOTI]),
                                                 inductor_configs=keyed_options(None, persistent_rows))


def write_onnx(onnx_path: Path, folder: Path) -> str:
    """Copy the ONNX file the backend runs (and its external data) into ``folder``; returns the file's name.

    The names are kept: a large model's ``.onnx`` names its external-data file inside the protobuf.
    """
    shutil.copyfile(onnx_path, folder / onnx_path.name)
    data = onnx_path.with_name(onnx_path.name + ".data")
    if data.is_file():
        shutil.copyfile(data, folder / data.name)
    return onnx_path.name


def write_exported(ep: ExportedProgram, folder: Path) -> None:
    """``torch.export.save`` without sample inputs (so that loading never reaches ``torch.load``)."""
    ep.example_inputs = None
    torch.export.save(ep, str(folder / FILES[EXPORTED]))


# --- readers: (folder, manifest, device) -> a callable on the flat tensor inputs


def read_aoti(folder: Path, manifest: dict[str, Any], device: torch.device) -> Callable[..., Any]:
    """The AOTInductor package's model, run by AOTInductor's container runner (:class:`AotiModel`); ``cuda-fp8``
    bundles replay CUDA graphs at the batch sizes they were compiled to (``backend_options["cuda_graph_batches"]``),
    as the in-process module does."""
    runner = AotiModel(folder / FILES[AOTI], device)
    if manifest["backend"] == "cuda-fp8" and device.type == "cuda":
        from recfx.backends.cuda_graphs import DEFAULT_BATCHES, BatchGraphs

        batches = tuple(manifest.get("backend_options", {}).get("cuda_graph_batches", DEFAULT_BATCHES))
        if batches:
            return BatchGraphs(runner, batches)
    return runner


class AotiModel:
    """The model of an AOTInductor package (``model.pt2``), loaded without ``torch._inductor.aoti_load_package``.

    The package's model folder (the shared library, its GPU kernels' cubins, the proxy executor's op list) is
    extracted into a private temporary folder, removed when this object is collected or the process exits, and the
    shared library is run by AOTInductor's container runner, the loader ``aoti_load_package`` itself builds. Its
    other work is skipped: the device checks, which :func:`recfx.runtime.bundle.check_compatible` made from the
    manifest already (on a CPU, probing the vector ISA again compiles test programs: ~2 s of a 2.3 s load), and its
    own extraction. Any AOTInductor package of one model, recfx's or not, loads this way.

    Raises:
        BundleError: the archive holds no AOTInductor model (no shared library under ``data/aotinductor/model``).
    """

    def __init__(self, package: Path, device: torch.device) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="recfx-aoti-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        with zipfile.ZipFile(package) as archive:
            members = [m for m in archive.infolist()
                       if _AOTI_MODEL_FILE.search(m.filename) and not m.is_dir()]
            for member in members:  # one flat folder: names are the package's own, without their path
                with archive.open(member) as src, open(self._folder / Path(member.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        libraries = sorted(self._folder.glob("*.so"))
        if len(libraries) != 1:
            self._cleanup()
            raise BundleError(f"{package} holds {len(libraries)} AOTInductor shared libraries under "
                              "data/aotinductor/model (expected one); the bundle was not written by recfx or is "
                              "damaged: save it again")
        aoti = torch._C._aoti
        self._runner: Any
        if device.type == "cuda":
            self._runner = aoti.AOTIModelContainerRunnerCuda(str(libraries[0]), 1, str(device), str(self._folder))
        elif device.type == "cpu":
            self._runner = aoti.AOTIModelContainerRunnerCpu(str(libraries[0]), 1)
        else:
            self._cleanup()
            raise BundleError(f"AOTInductor bundles run on CPU or CUDA devices, not {device}")
        self._out_spec = treespec_loads(self._runner.get_call_spec()[1])

    def __call__(self, *args: Any) -> Any:
        flat = [x for x in tree_flatten(args)[0] if isinstance(x, torch.Tensor)]
        return tree_unflatten(self._runner.run(flat), self._out_spec)


_AOTI_MODEL_FILE = re.compile(r"(^|/)data/aotinductor/model/[^/]+$")


def read_onnx(folder: Path, manifest: dict[str, Any], device: torch.device) -> Callable[..., Any]:
    from recfx.onnx.session import OrtRunner, providers_for

    out_spec = treespec_loads(manifest["out_spec"]) if manifest.get("out_spec") else None
    return OrtRunner(folder / manifest.get("model_file", FILES[ONNX]), [s["name"] for s in manifest["inputs"]],
                     [s["name"] for s in manifest["outputs"]], out_spec=out_spec,
                     providers=providers_for("cuda" if device.type == "cuda" else "cpu"))


def read_exported(folder: Path, manifest: dict[str, Any], device: torch.device) -> Callable[..., Any]:
    from recfx.ops.mode import reference_kernels

    path = folder / FILES[EXPORTED]
    check_no_pickle(path)
    module = torch.export.load(str(path)).module()
    if device.type == "cuda":
        module = module.to(device)

    def run(*args: Any) -> Any:
        with reference_kernels():
            return module(*args)

    run.graph_module = module  # type: ignore[attr-defined]
    return run


_PAYLOAD_CONFIG = re.compile(r"(^|/)data/(weights|constants)/[^/]*_config\.json$")
_SAMPLE_INPUTS = re.compile(r"(^|/)data/sample_inputs/[^/]*\.pt$")


def check_no_pickle(path: Path) -> None:
    """Refuse an exported-program archive that would make ``torch.export.load`` unpickle something.

    Raises:
        BundleError: a pickled tensor payload or non-empty pickled sample inputs (recfx never writes either).
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if _SAMPLE_INPUTS.search(info.filename) and info.file_size > 0:
                raise BundleError(f"{path} holds pickled sample inputs ({info.filename}); recfx bundles never do "
                                  "and loading them would run pickle. Save the module again with recfx.")
            if _PAYLOAD_CONFIG.search(info.filename):
                config = json.loads(archive.read(info))
                pickled = [k for k, v in config.get("config", {}).items() if v.get("use_pickle")]
                if pickled:
                    raise BundleError(f"{path} stores {pickled[:3]} as pickles; recfx bundles never do and loading "
                                      "them would run pickle. Save the module again with recfx.")


READERS: dict[str, Callable[[Path, dict[str, Any], torch.device], Callable[..., Any]]] = {
    AOTI: read_aoti, ONNX: read_onnx, EXPORTED: read_exported}
