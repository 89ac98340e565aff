"""What is benchmarked: a model variant (sequence length, beam) on a device and dtype, its inputs per batch size,
its reference outputs and FLOPs.

Sequence length means the input length of ``ksa`` models (``example_inputs(seq=...)``) and the total context tokens
of ``onerec`` models (``context_tokens=...``, the pathway lengths are rescaled); beam is ``OneRecConfig.beam``
(the model is rebuilt with the same seed, so the weights do not change). ``package.module:factory`` models have
neither; their inputs for another batch size repeat the factory's example rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from recfx.models import MODELS, ModelSpec
from recfx.models.resolve import resolve_model

SEQ_KWARGS = {"ksa": "seq", "onerec": "context_tokens"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model shape of a sweep; ``None`` keeps the model's default."""

    seq: int | None = None
    beam: int | None = None

    def label(self) -> str:
        parts = [f"seq {self.seq}" if self.seq is not None else "",
                 f"beam {self.beam}" if self.beam is not None else ""]
        return ", ".join(p for p in parts if p)


@dataclasses.dataclass
class Workload:
    """A built model variant and how to make its inputs.

    Attributes:
        name: the model reference as given (registry name or ``module:factory``).
        model: the reference model (eval mode, on ``device`` in ``dtype``): the uncompiled original.
        spec: its registry entry (``None`` for a factory model).
        variant: the sequence length / beam of this variant.
        factory_inputs: the factory's example inputs (factory models only).
    """

    name: str
    model: torch.nn.Module
    spec: ModelSpec | None
    variant: Variant
    device: torch.device
    dtype: torch.dtype
    seed: int = 0
    factory_inputs: tuple[torch.Tensor, ...] | None = None

    def inputs(self, batch: int, seed: int | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs for ``batch`` requests (deterministic for a seed; float inputs in the bench dtype)."""
        seed = self.seed if seed is None else seed
        if self.spec is None:
            assert self.factory_inputs is not None
            rows = torch.arange(batch) % self.factory_inputs[0].shape[0]
            return tuple(x[rows.to(x.device)] for x in self.factory_inputs)
        kwargs = {}
        if self.variant.seq is not None:
            kwargs[SEQ_KWARGS[self.spec.family]] = self.variant.seq
        return self.spec.example_inputs(batch, seed=seed, device=self.device, dtype=self.dtype, **kwargs)

    def tokens_per_request(self, inputs: tuple[torch.Tensor, ...]) -> int | None:
        """Tokens one request processes, for tokens/s: the input length (ksa), the generated semantic ids
        (onerec: beam x levels), ``None`` where tokens mean nothing (dlrm, factory models)."""
        if self.spec is None:
            return None
        if self.spec.family == "ksa":
            return int(inputs[0].shape[1])
        if self.spec.family == "onerec":
            return int(self.spec.config.beam * self.spec.config.levels)
        return None

    def reference(self, inputs: tuple[torch.Tensor, ...], count_flops: bool = True) -> tuple[Any, float | None]:
        """The original model's outputs on ``inputs`` and, when asked, the FLOPs of that call.

        FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix multiplications and attention,
        2 per multiply-add), or given by the model's ``ModelSpec.flops_fn`` when it has one (KSA: only allowed
        attention pairs are useful work); ``None`` when not asked or when the count is zero.
        """
        with torch.inference_mode():
            if not count_flops:
                return self.model(*inputs), None
            if self.spec is not None and self.spec.flops_fn is not None:
                return self.model(*inputs), float(self.spec.flops_fn(self.spec.config, inputs)) or None
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                out = self.model(*inputs)
        flops = float(counter.get_total_flops())
        return out, (flops or None)


def parse_dtype(name: str) -> torch.dtype:
    """``fp32``/``bf16``/``fp16`` -> the torch dtype (a clear error for anything else)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def variants(ref: str, seqs: tuple[int | None, ...], beams: tuple[int | None, ...]) -> list[Variant]:
    """The sweep's model variants, checked against what the model supports.

    Raises:
        ValueError: a sequence length for a model without one, a beam for a model without a beam, values < 1.
    """
    spec = MODELS.get(ref) if ref in MODELS else None
    if any(s is not None for s in seqs) and (spec is None or spec.family not in SEQ_KWARGS):
        raise ValueError(f"model {ref!r} takes no sequence length; --seq applies to "
                         f"{', '.join(n for n in MODELS.names() if MODELS.get(n).family in SEQ_KWARGS)}")
    if any(b is not None for b in beams) and (spec is None or not hasattr(spec.config, "beam")):
        raise ValueError(f"model {ref!r} has no beam; --beam applies to onerec models")
    for value in (*seqs, *beams):
        if value is not None and value < 1:
            raise ValueError(f"sequence lengths and beams must be >= 1, got {value}")
    return [Variant(seq, beam) for beam in beams for seq in seqs]


def build_workloads(ref: str, variant_list: list[Variant], device: torch.device, dtype: torch.dtype,
                    seed: int = 0) -> Iterator[Workload]:
    """Build each variant's model in turn (one at a time, so that large models are not held twice).

    Raises:
        ValueError: an unknown model reference, a factory that does not return ``(model, inputs)``.
    """
    if ref in MODELS:
        base = MODELS.get(ref)
        for variant in variant_list:
            spec = base
            if variant.beam is not None:
                spec = dataclasses.replace(base, config=base.config.replace(beam=variant.beam))
            model = spec.build(seed=seed, dtype=dtype, device=device)
            yield Workload(ref, model, spec, variant, device, dtype, seed)
            del model
        return
    _, model, inputs, _ = resolve_model(ref, device=str(device))
    model = model.to(device=device, dtype=dtype).eval()
    inputs = tuple(x.to(device=device, dtype=dtype if x.dtype.is_floating_point else x.dtype) for x in inputs)
    yield Workload(ref, model, None, variant_list[0], device, dtype, seed, factory_inputs=inputs)

