"""eager-fp8, the readable FP8 reference, costs at most 1.5x of eager's activation memory (issue 16.6).

Measured as the peak of the bytes the CPU allocator holds during one call beyond what it held before (torch
profiler memory events), so weights, which both backends hold before the call, do not count.
"""

from __future__ import annotations

import torch

import recfx
from recfx.models import get_model
from tests.memory import peak_new_bytes

MAX_RATIO = 1.5


def test_eager_fp8_peak_memory_within_one_and_a_half_of_eager() -> None:
    """onerec-tiny at batch 8 (compiled at batch 2) against the float model itself. Its quantized GEMMs have
    inputs of 0.1-1.5 MiB; with 2 MiB float64 quantization temporaries (slices of 2**18 elements) the ratio was
    1.9."""
    spec = get_model("onerec-tiny")
    model = spec.build(seed=0)
    inputs = spec.example_inputs(8, seed=1)
    fp8 = recfx.compile(model, spec.example_inputs(2, seed=0), backend="eager-fp8",
                        quant=recfx.QuantConfig(progress=False, eval_batches=1))
    assert fp8.report.sections["fp8"].quantized > 0
    fp8(*inputs)  # warm-up: lazily made state is not activation memory

    def eager() -> object:  # the model itself, as the eager backend runs it
        with torch.inference_mode():
            return model(*inputs)

    eager()
    base, quantized = peak_new_bytes(eager), peak_new_bytes(lambda: fp8(*inputs))
    assert base > 1 << 20, base  # the measurement sees the activations
    assert quantized <= MAX_RATIO * base, (f"eager-fp8 peaks at {quantized / 2**20:.2f} MiB, eager at "
                                           f"{base / 2**20:.2f} MiB: {quantized / base:.2f}x > {MAX_RATIO}x")
