"""ONNX -> TensorRT plan: a strongly typed network from TensorRT's ONNX parser (FP8 from the Q/DQ nodes),
optimisation profiles from the file's dynamic dims, a timing cache, the builder's optimisation level, and the plan
plus its manifest written atomically. ``recfx build-engine`` is the command-line form.

Example (needs TensorRT and a GPU)::

    from recfx.backends.tensorrt.build import EngineBuildConfig, build_engine
    config = EngineBuildConfig(profiles=(("short", {"batch": (1, 8, 32), "seq": (16, 128, 256)}),
                                         ("long", {"batch": (1, 2, 8), "seq": (256, 2048, 8192)})))
    result = build_engine("onerec.onnx", "onerec.plan", config)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recfx._io import atomic_write_bytes, atomic_write_text
from recfx.backends.tensorrt.availability import tensorrt_availability
from recfx.backends.tensorrt.cache import engine_key, plugin_manifest
from recfx.backends.tensorrt.profiles import InputDims, Profile, derive_profiles
from recfx.errors import BackendUnavailableError, RecfxError

log = logging.getLogger(__name__)

#: TensorRT's builder optimisation levels (3 is its default).
OPT_LEVELS = range(0, 6)


class EngineBuildError(RecfxError):
    """TensorRT's parser or builder refused the network; the message holds TensorRT's own errors."""


@dataclasses.dataclass(frozen=True)
class EngineBuildConfig:
    """How to build a plan.

    Attributes:
        profiles: ``(name, {symbol: (min, opt, max)})`` per optimisation profile; ``()`` means one profile from
            ``examples``.
        examples: symbol -> example size, for symbols a profile leaves out (``[1, ex, 4 * ex]``).
        optimization_level: TensorRT's builder optimisation level, 0..5.
        workspace_bytes: the builder's workspace limit (``None``: TensorRT's default).
        timing_cache: a file to read the timing cache from (when present) and write it back to.
        lint: run the TensorRT-rules linter in strict mode on the ONNX first (a violation stops the build).
    """

    profiles: tuple[tuple[str, Mapping[str, Sequence[int]]], ...] = ()
    examples: Mapping[str, int] = dataclasses.field(default_factory=dict)
    optimization_level: int = 3
    workspace_bytes: int | None = None
    timing_cache: str | None = None
    lint: bool = True

    def __post_init__(self) -> None:
        if self.optimization_level not in OPT_LEVELS:
            raise ValueError(f"optimization_level must be 0..5, got {self.optimization_level}")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be positive, got {self.workspace_bytes}")

    def to_dict(self) -> dict[str, Any]:
        return {"optimization_level": self.optimization_level, "workspace_bytes": self.workspace_bytes}


@dataclasses.dataclass(frozen=True)
class EngineBuildResult:
    plan: Path
    manifest: Path
    profiles: tuple[Profile, ...]
    seconds: float


def onnx_input_dims(model: Any) -> list[InputDims]:
    """``(name, shape)`` of an ONNX model's real inputs: ints for fixed dims, ``dim_param`` names for dynamic ones.

    Raises:
        ValueError: an input dim that is neither fixed nor named.
    """
    initializers = {t.name for t in model.graph.initializer}
    dims: list[InputDims] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape: list[int | str] = []
        for index, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                shape.append(dim.dim_param)
            else:
                raise ValueError(f"ONNX input {value.name!r} dim {index} is neither fixed nor named; export with "
                                 "named dynamic dims (recfx export-onnx does)")
        dims.append((value.name, tuple(shape)))
    return dims


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_profiles(onnx_path: str | Path, config: EngineBuildConfig) -> list[Profile]:
    """The profiles a build would use (no TensorRT needed): the file's dynamic dims with the config's ranges."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    names = [name for name, _ in config.profiles] or None
    return derive_profiles(onnx_input_dims(model), [ranges for _, ranges in config.profiles], config.examples, names)


def expected_key(onnx_path: Path, profiles: Sequence[Profile], config: EngineBuildConfig) -> str:
    """The key a plan built here from ``onnx_path`` would get (TensorRT's version and this GPU included)."""
    import tensorrt as trt
    import torch

    return engine_key(file_sha256(onnx_path), [p.to_dict() for p in profiles], config.to_dict(), trt.__version__,
                      torch.cuda.get_device_capability())


def write_plan(plan_path: Path, plan: bytes, profiles: Sequence[Profile], key: str) -> Path:
    """Write the plan, then its manifest (``<plan>.json``), each atomically; returns the manifest's path.

    A reader trusts a plan only when the manifest's SHA-256 matches its bytes (``runtime.read_manifest``), so a crash
    between the two writes leaves a plan that is refused, never one that is run with another plan's manifest.
    """
    atomic_write_bytes(plan_path, plan)
    manifest = plan_path.with_name(plan_path.name + ".json")
    record = plugin_manifest([p.to_dict() for p in profiles], key, hashlib.sha256(plan).hexdigest())
    atomic_write_text(manifest, json.dumps(record, indent=1))
    return manifest


def build_engine(onnx_path: str | Path, plan_path: str | Path, config: EngineBuildConfig) -> EngineBuildResult:
    """Build a TensorRT plan from ``onnx_path`` and write it (and ``<plan>.json``, its manifest) atomically.

    Raises:
        BackendUnavailableError: TensorRT is not installed.
        OnnxLintError: ``config.lint`` and the file breaks TensorRT's Q/DQ or plugin rules.
        EngineBuildError: TensorRT's parser or builder failed (its messages are included).
    """
    avail = tensorrt_availability()
    if not avail.ok:
        raise BackendUnavailableError(f"recfx build-engine needs TensorRT: {avail.reason}")
    import tensorrt as trt

    from recfx.backends.tensorrt.ksa_plugin import register_onnx_plugin
    from recfx.onnx import lint_model
    from recfx.onnx.lint import OnnxLintError

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if config.lint:
        report = lint_model(onnx_path)
        if not report.ok:
            raise OnnxLintError(f"{onnx_path} breaks TensorRT's rules (build with lint off to try anyway):\n"
                                + report.render())
    profiles = plan_profiles(onnx_path, config)
    start = time.perf_counter()
    register_onnx_plugin()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser refused {onnx_path}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.builder_optimization_level = config.optimization_level
    if config.workspace_bytes is not None:
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    timing_cache = builder_config.create_timing_cache(cache_bytes)
    builder_config.set_timing_cache(timing_cache, False)
    for profile in profiles:
        trt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.shapes.items():
            trt_profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        builder_config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see TensorRT's log above)")
    plan = bytes(memoryview(serialized))
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(memoryview(builder_config.get_timing_cache().serialize())))
    key = expected_key(onnx_path, profiles, config)
    manifest = write_plan(plan_path, plan, profiles, key)
    seconds = time.perf_counter() - start
    log.info("built %s (%d bytes, %d profiles) in %.1f s", plan_path, len(plan), len(profiles), seconds)
    return EngineBuildResult(plan_path, manifest, tuple(profiles), seconds)
