"""``recfx::silu_mul_fp8``: ``SiLU(gate) * up`` quantized per row to FP8, the input of a SwiGLU down projection.

``cuda-fp8`` leaves the per-token quantization of a GEMM input to Inductor, fused into the kernel producing it. For
the SwiGLU product Inductor's fused kernel is slow (``recfx.kernels.fp8_silu_quant`` says why), so with
``backend_options={"silu_quant_kernel": True}`` (``cuda-fp8``'s default) the lowering (``fp8_lower_scaled_mm``)
calls this op instead, which runs a hand-written Triton kernel on CUDA. Elsewhere it computes the same formula with
torch ops: the product in float32, then ``recfx.ops.fp8_rows.quantize_per_token`` (float32 division, one E4M3
cast), as the fused kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recfx.ops.fp8 import FP8_DTYPE
from recfx.ops.fp8_rows import EAGER, quantize_per_token

#: the dtypes ``gate`` and ``up`` may have
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _check(gate: Tensor, up: Tensor) -> None:
    name = "recfx::silu_mul_fp8"
    if gate.dtype not in INPUT_DTYPES or up.dtype != gate.dtype:
        raise ValueError(f"{name}: gate and up must have one dtype of {INPUT_DTYPES}, got {gate.dtype} and "
                         f"{up.dtype}")
    if gate.dim() != 2 or gate.shape != up.shape:
        raise ValueError(f"{name}: gate and up must be (M, K) of one shape, got {tuple(gate.shape)} and "
                         f"{tuple(up.shape)}; reshape them to rows first")
    if gate.device != up.device:
        raise ValueError(f"{name}: gate is on {gate.device}, up on {up.device}; move them to one device")


@torch.library.custom_op("recfx::silu_mul_fp8", mutates_args=())
def silu_mul_fp8(gate: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    """``recfx::silu_mul_fp8(Tensor gate, Tensor up) -> (Tensor q, Tensor scale)``: rows of ``SiLU(gate) * up``
    (computed in float32) quantized per row.

    Args:
        gate, up: (M, K), one float dtype.

    Returns:
        ``q`` (M, K) float8_e4m3fn and ``scale`` (M, 1) float32, ``q * scale ~ SiLU(gate) * up`` (a row holding
        NaN: NaN scale and values).

    Raises:
        ValueError: gate and up differ in shape, dtype or device, are not (M, K), or not a float dtype the op takes.

    Example:
        >>> import torch, recfx
        >>> q, s = torch.ops.recfx.silu_mul_fp8(torch.ones(2, 4), torch.full((2, 4), 2.0))
        >>> q.dtype, s.shape
        (torch.float8_e4m3fn, torch.Size([2, 1]))
    """
    _check(gate, up)
    h = torch.nn.functional.silu(gate.float()) * up.float()
    return quantize_per_token(EAGER, h, exact=False)


@silu_mul_fp8.register_fake
def _silu_mul_fp8_fake(gate: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    _check(gate, up)
    return (torch.empty_like(gate, dtype=FP8_DTYPE, memory_format=torch.contiguous_format),
            gate.new_empty((gate.shape[0], 1), dtype=torch.float32))


@silu_mul_fp8.register_kernel("cuda")
def _silu_mul_fp8_cuda(gate: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    _check(gate, up)
    try:
        from recfx.kernels.fp8_silu_quant import silu_mul_quant
    except ImportError as err:
        raise RuntimeError("recfx::silu_mul_fp8 on CUDA runs a Triton kernel, but Triton could not be imported "
                           f"({err}); install it with pip install 'recfx[gpu]'") from err
    gate, up = gate.contiguous(), up.contiguous()
    q = torch.empty(gate.shape, dtype=FP8_DTYPE, device=gate.device)  # row-major, as the fake says
    scale = gate.new_empty((gate.shape[0], 1), dtype=torch.float32)
    with torch.cuda.device(gate.device):  # the kernel launches on the current device
        silu_mul_quant(gate, up, q, scale)
    return q, scale


__all__ = ["INPUT_DTYPES", "silu_mul_fp8"]
