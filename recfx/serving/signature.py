"""A compiled module's inputs and outputs as Triton sees them: names, Triton data types and dims.

Triton describes a batched model by ``max_batch_size > 0`` and per-sample ``dims`` (the batch dim left out); a
dynamic dim is ``-1``. A recfx module is batched for Triton when dim 0 of every input and every output is the same
named dynamic dim (``batch``): requests can then be concatenated along it and the outputs split back. Any other
module is served unbatched (``max_batch_size: 0``, full shapes), one request per call.
"""

from __future__ import annotations

import dataclasses

import torch

from recfx.frontend.capture import TensorSpec
from recfx.runtime.compiled import CompiledModule

#: torch dtype -> Triton data type (the protocol's name; config.pbtxt spells it with a ``TYPE_`` prefix)
TRITON_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "FP32", torch.float16: "FP16", torch.float64: "FP64", torch.bfloat16: "BF16",
    torch.int64: "INT64", torch.int32: "INT32", torch.int16: "INT16", torch.int8: "INT8", torch.uint8: "UINT8",
    torch.bool: "BOOL",
}


@dataclasses.dataclass(frozen=True)
class TritonTensor:
    """One input or output of a served model: ``dims`` leave out the batch dim of a batched model; -1 is dynamic."""

    name: str
    dtype: torch.dtype
    dims: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        return TRITON_DTYPES[self.dtype]


@dataclasses.dataclass(frozen=True)
class TritonSignature:
    """What Triton is told about a module: ``batched`` (dim 0 of every tensor is the one batch dim), tensors."""

    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    batched: bool
    batch_dim: str | None  # the symbol of the batch dim, when batched


def _tensor(spec: TensorSpec, batched: bool) -> TritonTensor:
    if spec.dtype not in TRITON_DTYPES:
        raise TypeError(f"{spec.name!r} is {spec.dtype}, which Triton has no data type for; compile the model with "
                        f"inputs and outputs of one of {', '.join(str(d) for d in TRITON_DTYPES)}")
    shape = spec.shape[1:] if batched else spec.shape
    return TritonTensor(spec.name, spec.dtype, tuple(-1 if isinstance(d, str) else int(d) for d in shape))


def signature(module: CompiledModule) -> TritonSignature:
    """The Triton signature of ``module`` (see the module docstring for when it is batched).

    Raises:
        TypeError: an input or output has a dtype Triton cannot carry.
    """
    specs = [*module.input_specs, *module.output_specs]
    firsts = {s.shape[0] if s.shape else None for s in specs}
    batch = firsts.pop() if len(firsts) == 1 else None
    batched = isinstance(batch, str)
    return TritonSignature(tuple(_tensor(s, batched) for s in module.input_specs),
                           tuple(_tensor(s, batched) for s in module.output_specs), batched,
                           batch if isinstance(batch, str) else None)


def unbatched_reason(module: CompiledModule) -> str:
    """Why ``module`` cannot be batched by Triton (for error messages); empty when it can."""
    if signature(module).batched:
        return ""
    dims = ", ".join(f"{s.name}: {s.shape[0] if s.shape else 'scalar'}"
                     for s in (*module.input_specs, *module.output_specs))
    return (f"dim 0 of its inputs and outputs is not one shared dynamic batch dim ({dims}); compile it with a batch "
            "size >= 2 so that dim 0 stays dynamic")
