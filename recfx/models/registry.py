"""The model registry: reference models by name, each with an example-input generator."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from recfx.registry import Registry


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build a reference model and its inputs.

    Attributes:
        name: registry key (``onerec-tiny``).
        family: ``onerec`` / ``ksa`` / ``dlrm``.
        config: the model's frozen config.
        build_fn: ``config -> nn.Module`` (called under a fixed seed by :meth:`build`).
        inputs_fn: ``(config, batch, generator, device, dtype) -> tuple of tensors``.
        dynamic_dims: extra dynamic dims beyond the batch (``{"tokens": {1: "seq"}}``), for capture.
        description: one line for listings.
        flops_fn: ``(config, inputs) -> useful FLOPs of one call``, for models where counting the reference's
            operations would overstate the work (KSA's dense masked scores); ``None``: count the reference.
    """

    name: str
    family: str
    config: Any
    build_fn: Callable[[Any], torch.nn.Module]
    inputs_fn: Callable[..., tuple[torch.Tensor, ...]]
    dynamic_dims: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)
    description: str = ""
    flops_fn: Callable[[Any, tuple[torch.Tensor, ...]], float] | None = None

    def build(self, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
              ) -> torch.nn.Module:
        """The model in eval mode with deterministic weights (same ``seed`` -> same weights)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.device(device):
                model = self.build_fn(self.config)
        return model.to(dtype=dtype).eval()

    def example_inputs(self, batch: int = 2, *, seed: int = 0, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        """Random but deterministic inputs for ``batch`` requests (float inputs in ``dtype``)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        gen = torch.Generator().manual_seed(seed)
        inputs = self.inputs_fn(self.config, batch, gen, dtype, **kwargs)
        return tuple(x.to(device) for x in inputs)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (names must be unique)."""
    return MODELS.add(spec.name, spec)


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered as ``name``; unknown names raise with the list of known ones."""
    return MODELS.get(name)
