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

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
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
from recfx.frontend.size_one import describe, size_one_hazards

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


def write_aoti(ep: ExportedProgram, folder: Path, persistent_rows: int = 0, *, any_layout: bool = False) -> None:
    """Compile ``ep`` with AOTInductor into ``folder/model.pt2``, with the in-process module's heuristics
    (``persistent_rows``, ``any_layout``: ``recfx.backends.inductor.inductor_heuristics``).

    ``recfx::`` ops without a C++ kernel stay calls through AOTInductor's proxy executor (the op is looked up in the
    dispatcher at run time: ``import recfx`` registers it).

    Raises:
        BundleUnsupportedError: the graph squeezes a dynamic dim that may be 1 (:func:`size_one_hazards`).
    """
    hazards = size_one_hazards(ep)
    if hazards:
        raise BundleUnsupportedError(
            f"{describe(hazards)}. Compiled code decides once for every "
            "size whether that dim is 1, so a bundle would return the wrong shape when it is (e.g. a batch of 1). "
            "Say in the model what the shape is for every size instead of squeeze(dim) (index the dim, x[0], or "
            "reshape), or save with backend 'eager', whose exported program squeezes at run time")
    with TRACE_LOCK, inductor_heuristics(persistent_rows, any_layout=any_layout):
        options = {**keyed_options(None, persistent_rows, any_layout=any_layout), **_AOTI_PACKAGE_OPTIONS}
        torch._inductor.aoti_compile_and_package(ep, package_path=str(folder / FILES[AOTI]), inductor_configs=options)


#: the package layout :class:`AotiModel` reads, whatever the process's Inductor config says: one compiled shared
#: library with the weights inside it
_AOTI_PACKAGE_OPTIONS = {"aot_inductor.package_constants_in_so": True, "aot_inductor.package_cpp_only": False,
                         "aot_inductor.package_constants_on_disk_format": None}


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
    as the in-process module does, with the runner's thread synchronisation off (AOTInductor's advice for CUDA
    graphs; the graphs are single-threaded anyway)."""
    batches: tuple[int, ...] = ()
    if manifest["backend"] == "cuda-fp8" and device.type == "cuda":
        from recfx.backends.cuda_graphs import DEFAULT_BATCHES

        batches = tuple(manifest.get("backend_options", {}).get("cuda_graph_batches", DEFAULT_BATCHES))
    runner = AotiModel(folder / FILES[AOTI], device, single_threaded=bool(batches))
    if batches:
        from recfx.backends.cuda_graphs import BatchGraphs

        return BatchGraphs(runner, batches)
    return runner


@functools.cache
def _share_libstdcxx() -> None:
    """Put the C++ runtime the process already uses into the global symbol scope before an AOTInductor library is
    opened. Python opens PyTorch's libraries with local scope, so libstdc++ is not global there; an AOTInductor
    library, which carries inline template code of libstdc++ (std::regex, std::locale), then crashed with SIGSEGV
    while constructing its model on an H100 image (torch 2.11, GCC 13.3; native stack: ``parse_device_str`` ->
    ``std::regex`` -> ``regex_traits::transform_primary``), and loaded with this done first (or with libstdc++ in
    LD_PRELOAD). Opening a library that is already mapped only changes its scope, not what is loaded."""
    name = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
    with contextlib.suppress(OSError):  # no shared libstdc++ (a static build, another C++ runtime): nothing to share
        ctypes.CDLL(name, mode=os.RTLD_GLOBAL)


class AotiModel:
    """The model of an AOTInductor package (``model.pt2``) as recfx writes it, run without
    ``torch._inductor.aoti_load_package``; called with the flat tensor inputs, it returns the package's outputs.

    The package's model folder (the shared library with the weights inside it, its GPU kernels' cubins, the proxy
    executor's op list) is extracted into a private temporary folder, removed when this object is collected or the
    process exits, and the shared library is run by AOTInductor's container runner, which ``aoti_load_package``
    itself builds after its checks. Those checks are skipped: :func:`recfx.runtime.bundle.check_compatible` made
    them from the manifest already, and on a CPU ``aoti_load_package``'s takes most of its load time (Inductor's
    vector-ISA probe compiles and runs test programs). ``device`` is ``cpu`` or ``cuda:N`` (a bare ``cuda`` means
    the current GPU when this object is made); the model runs on the current CUDA stream, as with
    ``aoti_load_package``. ``single_threaded`` turns the runner's thread synchronisation off
    (``aoti_load_package``'s ``run_single_threaded``: for CUDA graphs; then one thread at a time may call it).

    Raises:
        BundleError: the archive is not a package of one model named ``model`` with its weights inside its one
            shared library (a package keeping its weights beside it, a C++-only package, files under several roots,
            nested or repeated files), it cannot be read, or the library cannot be loaded; the message says which.
    """

    def __init__(self, package: Path, device: torch.device, *, single_threaded: bool = False) -> None:
        if device.type not in ("cpu", "cuda"):
            raise BundleError(f"AOTInductor bundles run on CPU or CUDA devices, not {device}")
        self._folder = Path(tempfile.mkdtemp(prefix="recfx-aoti-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        try:
            library = self._extract(package)
            _share_libstdcxx()
            aoti: Any = torch._C._aoti  # the CUDA runner's binding has a 5-argument form its stubs lack (Inductor's
            self._runner = (aoti.AOTIModelContainerRunnerCuda(  # own output_code.py calls it so)
                str(library), 1, str(device), str(self._folder), single_threaded)
                if device.type == "cuda" else aoti.AOTIModelContainerRunnerCpu(str(library), 1))
            self._out_spec = treespec_loads(self._runner.get_call_spec()[1])
        except BundleError:
            self._cleanup()
            raise
        except Exception as exc:  # AOTInductor's loader raises many types; the message keeps its words
            self._cleanup()
            hint = ("If the temporary folder's file system does not allow running code (noexec), point TMPDIR "
                    "elsewhere. " if isinstance(exc, (OSError, RuntimeError)) else "")
            raise BundleError(f"cannot load the AOTInductor package {package} on {device} ({type(exc).__name__}: "
                              f"{str(exc)[:300]}). {hint}Copy or save the bundle again if it is damaged") from exc

    def _extract(self, package: Path) -> Path:
        """Write the package's model files into the private folder; returns its shared library."""
        with zipfile.ZipFile(package) as archive:
            names = [m.filename for m in archive.infolist() if not m.is_dir()]
            model = [(n, *n.split(_AOTI_MODEL_DIR, 1)) for n in names if _AOTI_MODEL_DIR in n]  # (name, root, leaf)
            roots = sorted({root for _, root, _ in model})
            leaves = [leaf for _, _, leaf in model]
            problem = None
            if len(roots) > 1:
                problem = f"model files under several roots {roots}"
            elif (len(set(names)) != len(names) or len(set(leaves)) != len(leaves)
                  or any("/" in leaf or leaf in ("", ".", "..") for leaf in leaves)):
                problem = f"nested or repeated model files ({', '.join(sorted(leaves)[:5])})"
            elif any(_AOTI_WEIGHTS.search(n) for n in names):
                problem = "weights stored beside the shared library (package_constants_in_so=False)"
            else:
                for name, _, leaf in model:
                    with archive.open(name) as src, open(self._folder / leaf, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                libraries = sorted(self._folder.glob("*.so"))
                if len(libraries) != 1:
                    problem = (f"{len(libraries)} shared libraries under {_AOTI_MODEL_DIR} (recfx writes one model, "
                               "named 'model', compiled: a C++-only package or another model name has none)")
        if problem is not None:
            raise BundleError(f"{package} is not an AOTInductor package as recfx writes it: {problem}. Save the "
                              "module again with recfx")
        return libraries[0]

    def __call__(self, *args: Any) -> Any:
        flat = [x for x in tree_flatten(args)[0] if isinstance(x, torch.Tensor)]
        return tree_unflatten(self._runner.run(flat), self._out_spec)


#: the package's model folder, below the archive's root folder
_AOTI_MODEL_DIR = "data/aotinductor/model/"
#: weights an AOTInductor package keeps outside its shared library (``package_constants_in_so=False``)
_AOTI_WEIGHTS = re.compile(r"(^|/)data/weights/|_weights\.blob$|(^|/)weights_config\.json$")


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
