"""``resolve_model``: a model and its inputs by registry name, MovieLens checkpoint or ``module:factory``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

from recfx.models import MODELS, ModelSpec
from recfx.models.movielens.checkpoint import is_checkpoint, load_checkpoint, training_data
from recfx.models.movielens.evaluate import example_inputs


def resolve_model(ref: str, *, batch: int = 2, dtype: torch.dtype = torch.float32, device: str = "cpu",
                  seed: int = 0) -> tuple[str, torch.nn.Module, tuple[torch.Tensor, ...], ModelSpec | None]:
    """A model and example inputs from a registry name, a trained MovieLens checkpoint folder (inputs: the first
    ``batch`` users' real test histories) or ``module:factory`` returning ``(model, inputs)``.

    The module is looked for in the current folder first, then on ``sys.path``, as ``python -m`` does (the
    ``recfx`` console script alone would not look in the current folder).

    Raises:
        ValueError: the reference is neither a known model nor an importable ``module:factory``.
    """
    if ref in MODELS:
        spec = MODELS.get(ref)
        return ref, spec.build(seed=seed, dtype=dtype, device=device), spec.example_inputs(
            batch, seed=seed, device=device, dtype=dtype), spec
    if is_checkpoint(ref):
        data = training_data(ref)
        model, manifest = load_checkpoint(ref, data)
        model = model.to(device=device, dtype=dtype)
        return (f"movielens-{manifest['kind']}", model, example_inputs(model, data, "test", batch, device), None)
    if ":" not in ref:
        raise ValueError(f"unknown model {ref!r}: use a registered name ({', '.join(MODELS.names())}), a folder "
                         "written by `recfx movielens train`, or 'package.module:factory' where factory() returns "
                         "(model, example_inputs)")
    mod_name, _, attr = ref.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot load {ref!r}: {err} (modules are looked for in the current folder {cwd}, then "
                         "on sys.path)") from None
    result: Any = factory()
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise ValueError(f"{ref} must return (model, example_inputs), got {type(result).__name__}")
    model, inputs = result
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return ref, model.to(device=device).eval(), tuple(x.to(device) for x in inputs), None
