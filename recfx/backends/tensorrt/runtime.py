"""Run a TensorRT plan on torch tensors: verified load, profile selection, ``execute_async_v3`` on the current
torch stream, optional CUDA graphs (``recfx.backends.cuda_graphs.BatchGraphs``).

A plan is loaded only with its manifest (``<plan>.json``, written by :func:`build.build_engine`) and only when its
bytes match the manifest's SHA-256. Inputs are bound by name in the engine's input order (``runner.input_names``);
shapes outside every optimisation profile raise a ``ValueError`` that names each profile and the dim outside it.

Example (needs TensorRT and a GPU)::

    runner = load_plan("onerec.plan", cuda_graph_batches=(1, 8))
    out = runner(tokens, lengths)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from recfx.backends.tensorrt.availability import tensorrt_availability
from recfx.backends.tensorrt.profiles import Profile, select_profile
from recfx.errors import BackendUnavailableError


def read_manifest(plan_path: Path) -> dict[str, Any]:
    """The manifest beside ``plan_path``, checked against the plan's bytes.

    Raises:
        FileNotFoundError: no manifest. ValueError: unreadable manifest or a plan whose bytes do not match it.
    """
    manifest = plan_path.with_name(plan_path.name + ".json")
    if not manifest.is_file():
        raise FileNotFoundError(f"{plan_path} has no manifest {manifest}; build plans with recfx build-engine")
    try:
        record = json.loads(manifest.read_text())
    except ValueError as err:
        raise ValueError(f"{manifest} is not valid JSON ({err}); build the plan again") from None
    digest = hashlib.sha256(plan_path.read_bytes()).hexdigest()
    if not isinstance(record, dict) or record.get("sha256") != digest:
        raise ValueError(f"{plan_path} does not match its manifest {manifest} (changed or cut short); build it again")
    return record


def manifest_profiles(record: dict[str, Any]) -> list[Profile]:
    """The :class:`Profile` objects a manifest records (as ``Profile.to_dict`` wrote them)."""
    return [Profile(p["name"], {k: tuple(tuple(s) for s in v) for k, v in p["shapes"].items()})  # type: ignore[misc]
            for p in record.get("profiles", [])]


class PlanRunner:
    """A deserialised plan, callable on CUDA tensors (positional, in ``input_names`` order)."""

    def __init__(self, plan_path: str | Path) -> None:
        avail = tensorrt_availability()
        if not avail.ok:
            raise BackendUnavailableError(f"running a TensorRT plan needs TensorRT: {avail.reason}")
        import tensorrt as trt

        from recfx.backends.tensorrt.ksa_plugin import register_onnx_plugin

        path = Path(plan_path)
        record = read_manifest(path)
        register_onnx_plugin()  # plans with KsaAttention nodes find it in the registry
        self._trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f"TensorRT could not deserialise {path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.profiles = manifest_profiles(record)
        if len(self.profiles) != self.engine.num_optimization_profiles:
            raise ValueError(f"{path}'s manifest lists {len(self.profiles)} profiles, the engine has "
                             f"{self.engine.num_optimization_profiles}; build it again")

    def _torch_dtype(self, name: str) -> torch.dtype:
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                 trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8,
                 trt.fp8: torch.float8_e4m3fn}
        return table[self.engine.get_tensor_dtype(name)]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"the engine takes {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        shapes = {name: tuple(x.shape) for name, x in zip(self.input_names, inputs)}
        index = select_profile(self.profiles, shapes)
        stream = torch.cuda.current_stream()
        if index != self.context.active_optimization_profile:
            self.context.set_optimization_profile_async(index, stream.cuda_stream)
        bound = []
        for name, x in zip(self.input_names, inputs):
            want = self._torch_dtype(name)
            if x.dtype != want or not x.is_cuda:
                raise TypeError(f"engine input {name!r} takes CUDA {want} tensors, got {x.device} {x.dtype}")
            x = x.contiguous()
            bound.append(x)  # keeps the contiguous copy alive until the launch is enqueued
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        outputs = []
        for name in self.output_names:
            dims = self.context.get_tensor_shape(name)
            out = torch.empty([dims[i] for i in range(len(dims))], dtype=self._torch_dtype(name),
                              device=inputs[0].device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to enqueue the engine for shapes {shapes} (see TensorRT's log)")
        return outputs


def load_plan(plan_path: str | Path, cuda_graph_batches: Sequence[int] = ()) -> Callable[..., Any]:
    """A :class:`PlanRunner`, wrapped in per-batch CUDA graphs when ``cuda_graph_batches`` is given."""
    runner = PlanRunner(plan_path)
    if not cuda_graph_batches:
        return runner
    from recfx.backends.cuda_graphs import BatchGraphs

    return BatchGraphs(runner, tuple(cuda_graph_batches))
