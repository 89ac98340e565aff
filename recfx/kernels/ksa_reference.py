"""Plain-PyTorch references of the KSA kernels (docs/ksa.md); importable without Triton.

``prefill_reference`` is the semantics of ``recfx::ksa_attention`` (the model's masked attention, plus the
log-sum-exp); ``decode_reference`` is one query per head over a contiguous slice of keys, the semantics of the
decode kernel. Both accumulate in float32 (float64 for float64 inputs) and return the input dtype.
"""

from __future__ import annotations

import torch

from recfx.ops.gqa import repeat_kv
from recfx.ops.ksa_layout import ksa_visibility


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, else float32 (the dtype of the log-sum-exp and of the accumulators)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def split_length(length: int, chunk: int, summaries: int) -> tuple[int, int]:
    """(text tokens, summary tokens) of an interleaved sequence of ``length`` positions.

    A trailing block holds the incomplete chunk's text; if ``length`` cuts a block inside its summary slots, the
    slots present are counted as summaries.
    """
    block = chunk + summaries
    blocks, rest = divmod(length, block)
    return blocks * chunk + min(rest, chunk), blocks * summaries + max(0, rest - chunk)


def prefill_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, summaries: int, window: int,
                      scale: float, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """KSA attention on the interleaved layout: q (B, L, H, D), k/v (B, L, Hkv, D) -> (out (B, R, H, D), lse (B, H, R)).

    ``rows`` (optional, 1-D positions) restricts the queries to those rows (R = len(rows), else R = L), so that
    long sequences can be checked on a sample of rows.
    """
    acc = accumulation_dtype(q.dtype)
    length, heads = q.shape[1], q.shape[2]
    rows = torch.arange(length, device=q.device) if rows is None else rows.to(q.device)
    keys = torch.arange(length, device=q.device)
    mask = ksa_visibility(rows[:, None], keys[None, :], chunk, summaries, window)  # (R, L)
    groups = heads // k.shape[2]
    qf = q[:, rows].to(acc).transpose(1, 2)  # (B, H, R, D)
    kf, vf = (repeat_kv(x, groups).to(acc).transpose(1, 2) for x in (k, v))  # (B, H, L, D)
    scores = (qf @ kf.transpose(-2, -1)) * scale  # (B, H, R, L)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, R)
    out = torch.exp(scores - lse[..., None]) @ vf  # (B, H, R, D)
    return out.transpose(1, 2).to(q.dtype).contiguous(), lse.contiguous()


def decode_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One query per head over every key given: q (B, H, D), k/v (B, T, Hkv, D) -> (B, H, D)."""
    acc = accumulation_dtype(q.dtype)
    groups = q.shape[1] // k.shape[2]
    kf, vf = (repeat_kv(x, groups).to(acc).permute(0, 2, 1, 3) for x in (k, v))  # (B, H, T, D)
    scores = (q.to(acc)[:, :, None, :] @ kf.transpose(-2, -1)) * scale  # (B, H, 1, T)
    out = torch.softmax(scores, dim=-1) @ vf  # (B, H, 1, D)
    return out[:, :, 0].to(q.dtype)


def count_allowed_pairs(length: int, chunk: int, summaries: int, window: int) -> int:
    """Allowed (query, key) pairs of the KSA mask over ``length`` interleaved positions, in closed form per row.

    Equals ``ksa_mask(length, ...).sum()`` without building the (L, L) mask (used for useful-FLOP counts).
    """
    n_text, n_sum = split_length(length, chunk, summaries)
    t = torch.arange(n_text, dtype=torch.int64)
    c = t // chunk
    text = (t % chunk + 1) + torch.clamp(c, max=window) * chunk + torch.clamp(c - window, min=0) * summaries
    slots = torch.arange(n_sum, dtype=torch.int64) % summaries
    return int(text.sum()) + int((chunk + slots + 1).sum())
