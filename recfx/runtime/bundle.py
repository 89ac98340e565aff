"""Bundles: a compiled module on disk (``CompiledModule.save``) and back (``recfx.load``).

A bundle is a folder: the backend's compiled code (:mod:`recfx.runtime.bundle_formats`) and ``manifest.json``
beside it, which records the recfx / torch / triton versions, the device (type, GPU compute capability, CPU vector
ISA), the backend, the input and output specs with their named dynamic dims, the quantization config, the SHA-256 and
size of every file, the compile report, and the Triton autotuner choices of recfx's kernels
(:mod:`recfx.kernels.autotune`: on the same GPU architecture a CUDA bundle's kernels then run the compiling
process's tile shapes, the same summation order, and the first call after a load does not autotune). A bundle is
written into a hidden temporary folder beside the target and renamed into place, so it is complete or absent.
Loading checks the manifest (files, versions, device) before any file is opened.

A bundle holding compiled code (AOTInductor's shared library) is trusted like any shared library: the hashes guard
against corruption (a truncated copy, a flipped byte), not against someone who can rewrite the manifest too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recfx._version import __version__
from recfx.analysis.numerics import OutputCheck
from recfx.backends.base import get_backend
from recfx.backends.inductor import InductorBackend
from recfx.frontend.capture import TensorSpec
from recfx.kernels import autotune
from recfx.passes.manager import PassRecord
from recfx.runtime import bundle_formats as formats
from recfx.runtime.bundle_formats import BundleError, BundleUnsupportedError
from recfx.runtime.compiled import CompiledModule
from recfx.runtime.report import CompileReport

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: bumped when the layout of a bundle changes; a loader refuses formats it does not know
BUNDLE_VERSION = 1
_REQUIRED = ("format", "backend", "versions", "device", "inputs", "outputs", "files", "report")

__all__ = ["BundleDeviceError", "BundleError", "BundleIntegrityError", "BundleUnsupportedError",
           "BundleVersionError", "load_bundle", "save_bundle"]


class BundleIntegrityError(BundleError):
    """A file of the bundle is missing, truncated or changed since it was written."""


class BundleVersionError(BundleError):
    """The bundle was written by another torch / triton / bundle-format version than the one loading it."""


class BundleDeviceError(BundleError):
    """The bundle was compiled for another device type or GPU architecture, or on a CPU with features this one
    lacks."""


# --- environment


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return str(triton.__version__)


def device_record(device: torch.device) -> dict[str, Any]:
    """What a compiled artifact depends on about ``device``: type, GPU name and compute capability, CPU vector ISA,
    and the host CPU (:func:`host_record`: AOTInductor's C++ code, a GPU bundle's host wrapper too, is built for it)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index),
                "capability": list(torch.cuda.get_device_capability(index)), "host": host_record()}
    if device.type == "cpu":
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        return {"type": "cpu", "isa": str(pick_vec_isa()) or "none", "host": host_record()}
    return {"type": device.type}


def device_key(device: torch.device) -> dict[str, Any]:
    """:func:`device_record` for the compile cache's key: on a CPU whose features torch reports, the host record and
    the settings Inductor's vector-ISA pick reads (``ATEN_CPU_CAPABILITY``, ``cpp.simdlen``, ``cpp.march``) stand in
    for the pick itself, so that a cache lookup does not pay the ISA probe (test programs compiled and run: ~2 s a
    process)."""
    if device.type == "cpu":
        host = host_record()
        if host["features"] is not None:
            return {"type": "cpu", "host": host, "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
                    **_cpp_settings()}
    return device_record(device)


def host_record() -> dict[str, Any]:
    """This machine's architecture, the CPU features it reports, its vector register lengths (ARM's SVE / SME,
    which Inductor builds for exactly) from ``torch.cpu.get_capabilities()`` (cpuid: cheap), and the ``-march``
    Inductor's C++ is built with (None: native); ``features`` is None where torch does not report them."""
    march = _cpp_settings()["march"]
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return {"machine": platform.machine(), "features": None, "vector_lengths": {}, "march": march}
    have = capabilities()
    return {"machine": platform.machine(), "features": sorted(k for k, v in have.items() if v is True),
            "vector_lengths": {k: v for k, v in sorted(have.items()) if k.endswith("_max_length")}, "march": march}


def _cpp_settings() -> dict[str, Any]:
    """Inductor's ``cpp.simdlen`` and ``cpp.march``, without importing Inductor (a second on a load's path): until
    its config module is imported nothing can have changed them, and their defaults come from the environment."""
    config = sys.modules.get("torch._inductor.config")
    if config is None:
        march = os.environ.get("TORCHINDUCTOR_CPP_MARCH") if _inductor_has_march() else None
        return {"simdlen": None, "march": march}
    return {"simdlen": getattr(config.cpp, "simdlen", None), "march": getattr(config.cpp, "march", None)}


@functools.cache
def _inductor_has_march() -> bool:
    """Whether this torch's Inductor has ``cpp.march`` (torch 2.13 has, 2.11 has not: there
    ``TORCHINDUCTOR_CPP_MARCH`` changes nothing and code is built for the native CPU), read from its config module's
    source without importing it."""
    source = Path(torch.__file__).parent / "_inductor" / "config.py"  # (find_spec would import torch._inductor)
    try:
        return "TORCHINDUCTOR_CPP_MARCH" in source.read_text(errors="replace")
    except OSError:
        return False


def _versions() -> dict[str, str | None]:
    return {"recfx": __version__, "torch": torch.__version__, "triton": _triton_version()}


def _module_device(module: CompiledModule) -> torch.device:
    devices = {s.device for s in module.input_specs if s.device is not None}
    if len(devices) > 1:
        raise BundleUnsupportedError(f"inputs on several devices {sorted(map(str, devices))}; a bundle has one")
    return devices.pop() if devices else torch.device("cpu")


# --- specs and reports as JSON


def _spec_to_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "shape": list(spec.shape), "dtype": str(spec.dtype).removeprefix("torch.")}


def _spec_from_dict(data: dict[str, Any], device: torch.device) -> TensorSpec:
    return TensorSpec(data["name"], tuple(data["shape"]), getattr(torch, data["dtype"]), device)


@dataclasses.dataclass(frozen=True)
class StoredSection:
    """A report section read back from a bundle: its data and its text as the original rendered it."""

    data: Any
    text: str

    def to_dict(self) -> Any:
        return self.data

    def render(self) -> str:
        return self.text


def report_to_dict(report: CompileReport) -> dict[str, Any]:
    data = json.loads(json.dumps(report.to_dict(), default=str))  # plain JSON (dtypes, tuples -> str, lists)
    data["sections_text"] = {k: (v.render() if hasattr(v, "render") else str(v)) for k, v in report.sections.items()}
    return data


def report_from_dict(data: dict[str, Any]) -> CompileReport:
    fields = {f.name for f in dataclasses.fields(CompileReport)}
    plain = {k: v for k, v in data.items() if k in fields and k not in ("passes", "numerics", "sections")}
    texts = data.get("sections_text", {})
    return CompileReport(
        **plain, passes=[PassRecord(**p) for p in data.get("passes", [])],
        numerics=[OutputCheck(**{**c, "shape": tuple(c["shape"])}) for c in data.get("numerics", [])],
        sections={k: StoredSection(v, texts.get(k, json.dumps(v, indent=1)))
                  for k, v in data.get("sections", {}).items()},
    )


# --- files


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.relative_to(folder).as_posix(): {"sha256": file_digest(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


@contextlib.contextmanager
def atomic_folder(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``, on any error it is removed.

    When another writer created ``path`` in the meantime (two processes filling one cache entry), ``overwrite=False``
    keeps theirs and drops ours.

    Raises:
        FileExistsError: ``path`` exists before the write and ``overwrite`` is False.
    """
    parent = path.parent
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another path")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists() and overwrite:
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "bundle")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, path)  # atomic; fails when a concurrent writer got there first
            except OSError:
                if not path.is_dir():
                    raise
                log.info("%s was written by another process meanwhile; keeping that one", path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- save


def save_bundle(module: CompiledModule, path: str | os.PathLike[str], *, overwrite: bool = False,
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``module`` as a bundle folder at ``path`` (see the module docstring); returns the path.

    ``meta`` (JSON values) is stored as the manifest's ``meta``: how the bundle was made (``recfx compile`` records
    the model name, seed, dtype and batch there, for ``recfx bench --bundle``).

    Raises:
        BundleUnsupportedError: the backend, or something in its graph, cannot be bundled (nothing is written).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = formats.bundle_format(module.backend)
    device = _module_device(module)
    if module.bundle_path is not None:  # loaded from a bundle: copy its verified files
        source = module.bundle_path
        read_manifest(source)
        with atomic_folder(path, overwrite=overwrite) as tmp:
            for name in (*(json.loads((source / MANIFEST).read_text())["files"]), MANIFEST):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / name, tmp / name)
        return path
    if module.example_inputs is None:
        raise BundleUnsupportedError("this CompiledModule has no example inputs to export its graph with; save a "
                                     "module returned by recfx.compile")
    with atomic_folder(path, overwrite=overwrite) as tmp:
        if fmt == formats.ONNX:
            onnx_path = getattr(module._runner, "path", None)
            if onnx_path is None:
                raise BundleUnsupportedError(f"the {module.backend} runner has no ONNX file to bundle")
            model_file = formats.write_onnx(Path(onnx_path), tmp)
        else:
            model_file = formats.FILES[fmt]
            ep = formats.export_final(module.graph_module, module.example_inputs, module.input_specs)
            try:
                if fmt == formats.AOTI:
                    backend = get_backend(module.backend)
                    assert isinstance(backend, InductorBackend)  # bundle_format gives AOTI to Inductor backends only
                    rows, any_layout = backend.heuristics(module.backend_options or {})
                    formats.write_aoti(ep, tmp, rows, any_layout=any_layout)
                else:
                    formats.write_exported(ep, tmp)
            except BundleError:
                raise
            except Exception as exc:  # AOTInductor raises many types; the bundle must not be half-written
                raise BundleUnsupportedError(f"backend {module.backend!r}: could not package the graph as {fmt} "
                                             f"({type(exc).__name__}: {str(exc)[:500]}); nothing was written. "
                                             "Save with backend 'eager' or 'ort' instead.") from exc
        out_spec = getattr(module.graph_module, "_out_spec", None)
        manifest = {
            "bundle_version": BUNDLE_VERSION, "format": fmt, "model_file": model_file, "backend": module.backend,
            "versions": _versions(),
            "device": device_record(device), "inputs": [_spec_to_dict(s) for s in module.input_specs],
            "outputs": [_spec_to_dict(s) for s in module.output_specs],
            "out_spec": torch.utils._pytree.treespec_dumps(out_spec) if out_spec is not None else None,
            "quant": module.quant_config, "backend_options": module.backend_options,
            "files": _file_records(tmp), "report": report_to_dict(module.report), "meta": meta or {},
            "autotune": autotune.record(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    log.info("saved %s bundle (%s) to %s", module.backend, fmt, path)
    return path


# --- load


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, after checking every file it lists (sizes and SHA-256).

    Raises:
        FileNotFoundError: no bundle at ``path``.
        BundleIntegrityError: a listed file is missing, truncated or changed; the manifest is unreadable.
        BundleVersionError: a bundle layout this recfx does not know.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"no recfx bundle at {path} (expected a folder written by CompiledModule.save)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleIntegrityError(f"{path} has no {MANIFEST}: not a recfx bundle, or an incomplete copy of one; "
                                   "copy the whole folder again or save it again")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleIntegrityError(f"{manifest_path} is not valid JSON ({exc}); the bundle is damaged: copy or "
                                   "save it again") from None
    if not isinstance(manifest, dict) or manifest.get("bundle_version") != BUNDLE_VERSION:
        got = manifest.get("bundle_version") if isinstance(manifest, dict) else None
        raise BundleVersionError(f"{path} is bundle format {got!r}; this recfx {__version__} reads format "
                                 f"{BUNDLE_VERSION}. Load it with the recfx that wrote it, or compile and save again")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing or manifest["format"] not in formats.READERS:
        raise BundleIntegrityError(f"{manifest_path} lacks {missing} or names an unknown format "
                                   f"{manifest.get('format')!r} (known: {sorted(formats.READERS)}); the bundle is "
                                   "damaged or not a recfx bundle: copy or save it again")
    for name, record in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise BundleIntegrityError(f"{path}: file {name} listed in the manifest is missing; the bundle is "
                                       "incomplete: copy the whole folder again or save it again")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise BundleIntegrityError(f"{path}: file {name} is {size} bytes, the manifest says {record['bytes']} "
                                       "(truncated or replaced); copy the bundle again or save it again")
        if file_digest(file) != record["sha256"]:
            raise BundleIntegrityError(f"{path}: file {name} changed since it was saved (SHA-256 differs from the "
                                       "manifest); copy the bundle again or save it again")
    return manifest


def check_compatible(manifest: dict[str, Any], device: torch.device, path: Path) -> None:
    """Refuse a bundle built with another torch (or triton, for GPU code) or for another device.

    Raises:
        BundleVersionError / BundleDeviceError: with what to do.
    """
    versions, here = manifest["versions"], _versions()
    wanted = manifest["device"]
    checked = ("torch", "triton") if wanted["type"] == "cuda" else ("torch",)
    for lib in checked:
        if versions.get(lib) != here[lib]:
            raise BundleVersionError(f"{path} was built with {lib} {versions.get(lib)}; this process has {lib} "
                                     f"{here[lib]}. Load it with {lib} {versions.get(lib)}, or compile the model "
                                     "again here (recfx.compile(..., cache_dir=...) does it once per machine)")
    if device.type != wanted["type"]:
        raise BundleDeviceError(f"{path} was compiled for {wanted['type']} ({_describe(wanted)}); it cannot run on "
                                f"{device}. Load it with device={wanted['type']!r}, or compile the model for "
                                f"{device.type} and save that")
    if device.type == "cuda" and manifest["format"] == formats.AOTI:
        try:
            have = device_record(device)
        except (AssertionError, RuntimeError) as exc:  # torch without CUDA, or no such GPU
            raise BundleDeviceError(f"{path} holds GPU code; this process cannot use {device} ({exc}). Load it on a "
                                    "machine with that GPU and a CUDA build of torch") from exc
        if have["capability"] != wanted["capability"]:
            raise BundleDeviceError(f"{path} holds GPU code for {_describe(wanted)}; {device} is {_describe(have)}. "
                                    "Compile the model on this GPU architecture and save that")
    if manifest["format"] == formats.AOTI:
        problem = _host_problem(wanted)
        if problem:
            raise BundleDeviceError(f"{path} holds C++ code {problem}. Compile the model on this kind of machine and "
                                    "save that")


def _host_problem(wanted: dict[str, Any]) -> str | None:
    """Why this machine's CPU cannot run the AOTInductor C++ code of a bundle compiled on ``wanted``'s host, or None.

    Inductor builds that code with ``-march=native``: it may use any instruction of the compiling CPU, so every CPU
    feature the compiling machine reported must be here too, with the same vector lengths. Code built for a target
    the user chose (``TORCHINDUCTOR_CPP_MARCH``, recorded as ``march``) is checked for the architecture only. A
    manifest without features (an older recfx, or a torch without ``torch.cpu.get_capabilities``) falls back to
    Inductor's vector ISA for CPU bundles, which must equal this machine's pick (Inductor compiles and runs test
    programs to choose it: ~2 s); GPU bundles then pass."""
    host, here = wanted.get("host") or {}, host_record()
    if host.get("features") is None or here["features"] is None:
        if wanted["type"] != "cpu":
            return None
        isa = device_record(torch.device("cpu"))["isa"]
        return None if isa == wanted["isa"] else f"for the {wanted['isa']} vector ISA; this CPU picks {isa}"
    if host["machine"] != here["machine"]:
        return f"built on a {host['machine']} machine; this one is {here['machine']}"
    if host.get("march"):  # built for a chosen target (TORCHINDUCTOR_CPP_MARCH), not -march=native: the user's call
        return None
    lengths = host.get("vector_lengths") or {}
    here_lengths = here.get("vector_lengths") or {}
    if lengths != {k: v for k, v in here_lengths.items() if k in lengths}:
        return f"built for vector lengths {lengths}; this CPU has {here_lengths}"
    missing = sorted(set(host["features"]) - set(here["features"]))
    if missing:
        return (f"built with -march=native on a CPU with features this one lacks: {', '.join(missing[:8])}"
                f"{' ...' if len(missing) > 8 else ''}")
    return None


def _describe(record: dict[str, Any]) -> str:
    if record["type"] == "cuda":
        major, minor = record["capability"]
        return f"{record['name']}, sm_{major}{minor}"
    return f"vector ISA {record.get('isa')}" if record["type"] == "cpu" else record["type"]


def _replay_autotune(manifest: dict[str, Any], target: torch.device, path: Path) -> None:
    """Seed the Triton autotuners of recfx's kernels with the choices the saving process made, for a CUDA target
    (:func:`recfx.kernels.autotune.replay`): the kernels the package calls back into then run the same configs as
    there (the same summation order; no tuning on the first call). Choices are per Triton version, which
    :func:`check_compatible` has checked for CUDA bundles. A manifest without ``autotune`` (an older recfx) seeds
    nothing.

    Choices are replayed only onto the GPU architecture that made them: tile shapes tuned on one may not fit another
    (shared memory, registers), where the autotuner would have skipped them (an exported-program bundle runs on any
    CUDA GPU).

    Raises:
        BundleIntegrityError: the manifest's ``autotune`` field is malformed (the hashes cover files, not the
            manifest, so a damaged one is caught here).
    """
    if target.type != "cuda":
        return
    choices = manifest.get("autotune")
    if choices is None:
        return
    saved = manifest["device"].get("capability")
    try:
        here = device_record(target)["capability"]
    except (AssertionError, RuntimeError) as exc:  # no such GPU: the reader reports it
        log.info("autotuner choices of %s not replayed: %s", path, exc)
        return
    if saved is None or list(saved) != list(here):
        log.info("autotuner choices of %s not replayed: saved on compute capability %s, this GPU is %s (its kernels "
                 "tune on their first call)", path, saved, here)
        return
    try:
        seeded = autotune.replay(choices)
    except ValueError as exc:
        raise BundleIntegrityError(f"{path}: the manifest's 'autotune' field is malformed ({exc}); the bundle is "
                                   "damaged (copy it again or save it again), or was saved by a newer recfx (load it "
                                   "with that version)") from exc
    log.info("replayed %d Triton autotuner choices from %s", seeded, path)


def load_bundle(path: str | os.PathLike[str], device: str | torch.device | None = None) -> CompiledModule:
    """Check and load the bundle at ``path``; ``device`` defaults to the one it was compiled for. On a CUDA device the
    Triton autotuners of recfx's kernels are first seeded with the saving process's choices (:func:`_replay_autotune`).

    Raises:
        FileNotFoundError / BundleIntegrityError / BundleVersionError / BundleDeviceError: see :func:`read_manifest`,
            :func:`check_compatible` and :func:`_replay_autotune`; nothing is loaded then.
    """
    path = Path(path)
    manifest = read_manifest(path)
    target = torch.device(device if device is not None else manifest["device"]["type"])
    if target.type == "cuda" and target.index is None and torch.cuda.is_available():
        target = torch.device("cuda", torch.cuda.current_device())
    check_compatible(manifest, target, path)
    _replay_autotune(manifest, target, path)
    runner = formats.READERS[manifest["format"]](path, manifest, target)
    report = report_from_dict(manifest["report"])
    report.sections["bundle"] = StoredSection({"path": str(path)}, f"loaded from bundle {path}")
    if hasattr(runner, "stats"):  # CUDA graphs of a cuda-fp8 bundle: this process's replays, not the compiler's
        report.sections["cuda_graphs"] = runner.stats
    inputs = [_spec_from_dict(s, target) for s in manifest["inputs"]]
    outputs = [_spec_from_dict(s, target) for s in manifest["outputs"]]
    module = CompiledModule(getattr(runner, "graph_module", None), runner, inputs, outputs, report,
                            quant_config=manifest.get("quant"), backend_options=manifest.get("backend_options"))
    module.bundle_path = path
    module.bundle_meta = manifest.get("meta", {})
    return module
