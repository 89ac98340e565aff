"""The in-process path: the final graph re-exported with its dynamic dims and compiled by Torch-TensorRT's
dynamo frontend (``torch_tensorrt.dynamo.compile``), with recfx's converters and the generated KSA plugin
registered. Torch-TensorRT partitions the graph, runs what TensorRT cannot take in PyTorch, and returns a
``GraphModule`` that calls its engines.

Before the build, :func:`partition.plan_partition` (with Torch-TensorRT's converter registry as the registry query)
lists what will fall back; the list goes into the compile report (section ``tensorrt``) and
``require_full_graph=True`` turns any fallback into a :class:`partition.TensorRTFallbackError`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.export import Dim
from torch.fx import GraphModule

from recfx.backends.tensorrt.partition import PartitionPlan, plan_partition
from recfx.backends.tensorrt.profiles import Profile, derive_profiles
from recfx.frontend.capture import TensorSpec, export_program

log = logging.getLogger(__name__)

#: ``backend_options`` of the ``trt`` backends.
OPTIONS = ("require_full_graph", "profile", "optimization_level", "timing_cache", "engine_cache_dir", "min_block_size",
           "via", "cache_dir", "cuda_graph_batches")


@dataclasses.dataclass
class TensorRTReport:
    """The compile report's ``tensorrt`` section: the partition (what falls back, and why) and the profile."""

    plan: PartitionPlan | None = None
    profile: Profile | None = None

    def to_dict(self) -> dict[str, Any]:
        profile = self.profile.to_dict() if self.profile else None
        return {**(self.plan.to_dict() if self.plan else {}), "profile": profile}

    def render(self) -> str:
        lines = [self.plan.render()] if self.plan else []
        if self.profile is not None:
            lines += [f"  profile {self.profile.name}: " + ", ".join(f"{k} min {v[0]} opt {v[1]} max {v[2]}"
                                                                   for k, v in self.profile.shapes.items())]
        return "\n".join(lines)


def dynamic_shapes(specs: Sequence[TensorSpec]) -> tuple[dict[int, Any] | None, ...] | None:
    """``torch.export`` dynamic shapes from the captured specs: one ``Dim`` per symbol, shared across inputs."""
    dims: dict[str, Any] = {}
    shapes = tuple({d: dims.setdefault(size, Dim(size)) for d, size in enumerate(spec.shape) if isinstance(size, str)}
                   or None for spec in specs)
    return shapes if any(shapes) else None


def example_sizes(specs: Sequence[TensorSpec], inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """symbol -> its size in the example inputs."""
    return {size: int(x.shape[d]) for spec, x in zip(specs, inputs) for d, size in enumerate(spec.shape)
            if isinstance(size, str)}


def trt_inputs(profile: Profile, specs: Sequence[TensorSpec]) -> list[Any]:
    """``torch_tensorrt.Input`` per graph input, from one optimisation profile."""
    import torch_tensorrt

    return [torch_tensorrt.Input(min_shape=profile.shapes[s.name][0], opt_shape=profile.shapes[s.name][1],
                                 max_shape=profile.shapes[s.name][2], dtype=s.dtype, name=s.name) for s in specs]


def partition(gm: GraphModule) -> PartitionPlan:
    """What TensorRT will take and what falls back, asking Torch-TensorRT's converter registry."""
    from torch_tensorrt.dynamo.conversion._ConverterRegistry import DYNAMO_CONVERTERS

    import recfx.backends.tensorrt.converters  # noqa: F401 - registers recfx's converters
    from recfx.backends.tensorrt.ksa_plugin import register_torch_plugin

    register_torch_plugin()
    return plan_partition(gm, lambda node: node in DYNAMO_CONVERTERS)


def compile_graph(gm: GraphModule, inputs: Sequence[torch.Tensor], specs: Sequence[TensorSpec],
                  options: Mapping[str, Any], report: TensorRTReport) -> Callable[..., Any]:
    """Compile ``gm`` with Torch-TensorRT; ``report`` receives the partition and the profile.

    Raises:
        TensorRTFallbackError: ``require_full_graph`` and some nodes would run in PyTorch.
    """
    import torch_tensorrt

    plan = partition(gm)
    report.plan = plan
    log.info("%s", plan.render())
    full = bool(options.get("require_full_graph", False))
    if full:
        plan.check_full_graph()
    ranges = options.get("profile")
    names = [s.name for s in specs]
    (profile,) = derive_profiles([(s.name, s.shape) for s in specs], [ranges] if ranges else [],
                                 example_sizes(specs, inputs))
    report.profile = profile
    ep = export_program(gm, tuple(inputs), dynamic_shapes(specs))
    kwargs: dict[str, Any] = {"min_block_size": int(options.get("min_block_size", 1)),
                              "require_full_compilation": full,
                              "optimization_level": int(options.get("optimization_level", 3))}
    if options.get("timing_cache"):
        kwargs["timing_cache_path"] = str(options["timing_cache"])
    if options.get("engine_cache_dir"):
        kwargs.update(cache_built_engines=True, reuse_cached_engines=True,
                      engine_cache_dir=str(options["engine_cache_dir"]))
    log.info("torch_tensorrt.dynamo.compile(%s inputs %s, %s)", len(names), names, kwargs)
    return torch_tensorrt.dynamo.compile(ep, arg_inputs=trt_inputs(profile, specs), **kwargs)
