"""Building blocks shared by the reference models: RMSNorm, RoPE, SwiGLU, GQA attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recfx.ops.gqa import repeat_kv


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (computed in the input dtype, like Llama's reference)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """FFN: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotate-half RoPE at integer ``positions`` (any shape) -> (..., head_dim) each."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    freqs = positions.to(torch.float64)[..., None] * inv_freq  # (..., D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (..., D)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE; x is (B, T, H, D), cos/sin are (T, D)."""
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)  # (T, 1, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Plain softmax attention with a boolean mask (True = may attend), GQA-aware.

    q: (B, L, H, D); k, v: (B, L, Hkv, D); mask: (L, L). Returns (B, L, H, D).
    """
    groups = q.shape[2] // k.shape[2]
    k, v = repeat_kv(k, groups), repeat_kv(v, groups)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, L, L)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v).transpose(1, 2)  # (B, L, H, D)
