"""Validation of the example inputs a user hands to :func:`recfx.frontend.capture`."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch


def normalize_example_inputs(model: torch.nn.Module, example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Return the example inputs as a tuple of tensors, or raise a ``TypeError`` that says what is wrong.

    A single tensor is accepted as a one-element tuple. Every element must be a tensor and their number must fit
    ``model.forward``'s signature.
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict) or not isinstance(example_inputs, Sequence):
        raise TypeError(
            "example_inputs must be a tuple of tensors (one per positional argument of forward), "
            f"got {type(example_inputs).__name__}"
        )
    bad = [(i, type(x).__name__) for i, x in enumerate(example_inputs) if not isinstance(x, torch.Tensor)]
    if bad:
        where = ", ".join(f"#{i} is {t}" for i, t in bad)
        raise TypeError(f"example_inputs must all be tensors; {where}. Pass tensors (constants belong in the model).")
    try:
        inspect.signature(model.forward).bind(*example_inputs)
    except TypeError as err:
        raise TypeError(
            f"example_inputs do not fit {type(model).__name__}.forward{inspect.signature(model.forward)}: {err}. "
            f"Got {len(example_inputs)} tensor(s)."
        ) from None
    return tuple(example_inputs)


def input_names(model: torch.nn.Module, n: int) -> list[str]:
    """Names of the first ``n`` positional parameters of ``model.forward`` (``*args`` are numbered)."""
    names: list[str] = []
    for p in inspect.signature(model.forward).parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            names.extend(f"{p.name}_{i}" for i in range(n - len(names)))
            break
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
    return names[:n]
