"""The ``model.py`` that ``recfx export-triton`` writes beside a recfx bundle for Triton's Python backend.

Triton's Python-backend stub imports this file (it is copied, not imported by recfx) and calls ``TritonPythonModel``:
``initialize`` loads the bundle in ``<version>/bundle`` with :func:`recfx.load` (files, versions and device checked
first), ``execute`` answers a list of requests. Each request is checked on its own (a bad one gets its own error
response and leaves the others of the batch alone); the good ones of a batch are concatenated along the batch dim
when the model is batched, run in one call and split back.

The stub must find ``recfx`` and ``torch`` (``PYTHONPATH``, or an ``EXECUTION_ENV_PATH`` packed environment) and load
the same ``libpython`` build as that environment's standard library (docs/serving.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

import recfx


class TritonPythonModel:
    """A recfx bundle behind Triton's Python backend."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"] / "bundle"
        self.module = recfx.load(folder)
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [s.name for s in self.module.input_specs]
        self.outputs = [s.name for s in self.module.output_specs]
        self.device = next((s.device for s in self.module.input_specs if s.device is not None), torch.device("cpu"))

    def _tensors(self, request: Any) -> tuple[torch.Tensor, ...]:
        arrays = []
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}; the model takes {self.inputs}")
            arrays.append(tensor.as_numpy())
        args = tuple(torch.tensor(a, device=self.device) for a in arrays)  # torch's own aligned buffers
        self.module.check_inputs(args)
        return args

    def _call(self, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return list(torch.utils._pytree.tree_leaves(self.module(*args)))

    def _response(self, outs: list[torch.Tensor]) -> Any:
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.ascontiguousarray(o.cpu().numpy())) for name, o in zip(self.outputs, outs)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        good: list[tuple[int, tuple[torch.Tensor, ...]]] = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._tensors(request)))
            except (ValueError, TypeError) as err:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"recfx: {err}", pb_utils.TritonError.INVALID_ARG))
        try:
            if self.batched and len(good) > 1:
                sizes = [args[0].shape[0] for _, args in good]
                outs = self._call(tuple(torch.cat(parts) for parts in zip(*(args for _, args in good))))
                split = [o.split(sizes) for o in outs]
                for j, (i, _) in enumerate(good):
                    responses[i] = self._response([parts[j] for parts in split])
            else:
                for i, args in good:
                    responses[i] = self._response(self._call(args))
        except Exception as err:  # noqa: BLE001 -- the model raised: answer this batch with the error, keep serving
            for i, _ in good:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"recfx model error: {type(err).__name__}: {err}"))
        return responses
