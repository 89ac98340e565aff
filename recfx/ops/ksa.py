"""``recfx::ksa_attention``: Kwai Summary Attention on the interleaved layout (docs/ksa.md).

One op, defined once with ``torch.library``: CPU and any dtype other than bf16/fp16 run the reference (the model's
masked attention with the spec's §2 mask); CUDA with bf16/fp16 runs the Triton prefill kernel
(``recfx/kernels/ksa_prefill.py``), except under :func:`recfx.ops.mode.reference_kernels` (what the ``eager``
backends use), where it runs the reference too. Inductor calls the op as an extern kernel.
"""

from __future__ import annotations

import torch

from recfx.kernels.ksa_reference import accumulation_dtype, prefill_reference
from recfx.ops.mode import use_reference

#: dtypes the Triton kernel runs (others use the reference, on any device).
KERNEL_DTYPES = (torch.bfloat16, torch.float16)


def check_ksa_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int,
                   window: int) -> None:
    """Raise ``ValueError`` unless the arguments describe a valid KSA attention (works on fake tensors too)."""
    if chunk_size < 1 or summaries < 1 or window < 0:
        raise ValueError(f"ksa_attention needs chunk_size >= 1, summaries >= 1, window >= 0; got "
                         f"chunk_size={chunk_size}, summaries={summaries}, window={window}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"ksa_attention takes q, k, v as [B, L, H, D]; got ranks {q.dim()}, {k.dim()}, {v.dim()}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.dtype != k.dtype or q.dtype != v.dtype or not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    heads, kv_heads = q.shape[2], k.shape[2]
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"query heads ({heads}) must be a multiple of kv heads ({kv_heads})")
    torch._check_with(ValueError, q.shape[0] == k.shape[0],
                      lambda: f"batch of q {q.shape[0]} != batch of k/v {k.shape[0]}")
    torch._check_with(ValueError, q.shape[1] == k.shape[1],
                      lambda: f"length of q {q.shape[1]} != length of k/v {k.shape[1]}; KSA self-attention needs "
                              "one interleaved sequence")
    torch._check_with(ValueError, q.shape[3] == k.shape[3],
                      lambda: f"head dim of q {q.shape[3]} != head dim of k/v {k.shape[3]}")


@torch.library.custom_op("recfx::ksa_attention", mutates_args=())
def ksa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int, window: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kwai Summary Attention over the interleaved sequence (text chunks of ``chunk_size``, each followed by
    ``summaries`` summary tokens; ``window`` in chunks).

    Args:
        q: (B, L, H, D) queries; k, v: (B, L, Hkv, D) keys/values, H a multiple of Hkv (GQA).
        chunk_size: k, text tokens per chunk. summaries: S, summary tokens per chunk. window: W, in chunks.
        scale: softmax scale (usually D ** -0.5).

    Returns:
        ``(out, lse)``: out (B, L, H, D) in q's dtype; lse (B, H, L), the natural log-sum-exp of each row's scaled
        scores, float32 (float64 for float64 inputs).

    Raises:
        ValueError: bad shapes, dtypes or KSA parameters.

    Example:
        >>> import torch, recfx
        >>> q = torch.randn(1, 10, 2, 8); kv = torch.randn(1, 10, 1, 8)
        >>> out, lse = torch.ops.recfx.ksa_attention(q, kv, kv, 4, 1, 1, 8 ** -0.5)
        >>> out.shape, lse.shape
        (torch.Size([1, 10, 2, 8]), torch.Size([1, 2, 10]))
    """
    check_ksa_args(q, k, v, chunk_size, summaries, window)
    return prefill_reference(q, k, v, chunk_size, summaries, window, scale)


@ksa_attention.register_fake
def _ksa_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int,
                        window: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_ksa_args(q, k, v, chunk_size, summaries, window)
    b, length, heads, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((b, heads, length), dtype=accumulation_dtype(q.dtype))


@ksa_attention.register_kernel("cuda")
def _ksa_attention_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int, summaries: int,
                        window: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    check_ksa_args(q, k, v, chunk_size, summaries, window)
    if q.dtype not in KERNEL_DTYPES or use_reference():
        return prefill_reference(q, k, v, chunk_size, summaries, window, scale)
    try:
        from recfx.kernels.ksa_prefill import ksa_prefill
    except ImportError as err:
        raise RuntimeError("recfx::ksa_attention on CUDA in bf16/fp16 runs a Triton kernel, but Triton could not "
                           f"be imported ({err}); install it with pip install 'recfx[gpu]'") from err
    return ksa_prefill(q, k, v, chunk_size, summaries, window, scale)
