"""A Kwai Summary Attention transformer (docs/ksa.md): summary tokens, hybrid 3:1 stacks.

The attention here is the plain mask-based reference; the ``fuse_ksa`` pass and the kernels replace it.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from recfx.config import ConfigBase
from recfx.models import ksa_mask as layout
from recfx.models.common import RMSNorm, SwiGLU, apply_rope, masked_attention, rope_angles


@dataclasses.dataclass(frozen=True)
class KSAConfig(ConfigBase):
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    chunk: int = 8  # k
    summaries: int = 1  # S
    window: int = 128  # W, in chunks
    full_every: int = 4  # every full_every-th layer is a full (text-causal) layer: 3:1 stacks; 0 = all KSA
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def validate(self) -> None:
        if self.chunk < 1 or self.summaries < 1 or self.window < 0:
            raise ValueError(f"need chunk >= 1, summaries >= 1, window >= 0; got {self.chunk}, "
                             f"{self.summaries}, {self.window}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.d_head % 2:
            raise ValueError(f"d_head must be even for RoPE, got {self.d_head}")

    def is_ksa_layer(self, i: int) -> bool:
        return self.full_every == 0 or (i + 1) % self.full_every != 0


class KSAAttention(nn.Module):
    """GQA attention with per-position projections (summary tokens use their own q/k/v) and RoPE after q/k norms."""

    def __init__(self, cfg: KSAConfig, ksa: bool) -> None:
        super().__init__()
        self.cfg, self.ksa = cfg, ksa
        q_out, kv_out = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
        self.q_proj = nn.Linear(cfg.d_model, q_out, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, kv_out, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, kv_out, bias=False)
        if ksa:
            self.q_proj_summary = nn.Linear(cfg.d_model, q_out, bias=False)
            self.k_proj_summary = nn.Linear(cfg.d_model, kv_out, bias=False)
            self.v_proj_summary = nn.Linear(cfg.d_model, kv_out, bias=False)
        self.q_norm = RMSNorm(cfg.d_head, cfg.norm_eps)
        self.k_norm = RMSNorm(cfg.d_head, cfg.norm_eps)
        self.o_proj = nn.Linear(q_out, cfg.d_model, bias=False)

    def _project(self, x: torch.Tensor, summary: torch.Tensor | bool, text_proj: nn.Linear,
                 name: str) -> torch.Tensor:
        if isinstance(summary, bool):  # decoding: every position is of one kind
            return getattr(self, name)(x) if summary and self.ksa else text_proj(x)
        out = text_proj(x)
        if self.ksa:
            out = torch.where(summary[:, None], getattr(self, name)(x), out)  # summary rows use their projection
        return out

    def qkv(self, x: torch.Tensor, summary: torch.Tensor | bool, cos: torch.Tensor,
            sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, L, H, D) and k, v (B, L, Hkv, D), normed and rotated; ``summary`` is (L,) bool or one bool."""
        b, length, _ = x.shape  # (B, L, d)
        cfg = self.cfg
        q = self._project(x, summary, self.q_proj, "q_proj_summary").view(b, length, cfg.n_heads, cfg.d_head)
        k = self._project(x, summary, self.k_proj, "k_proj_summary").view(b, length, cfg.n_kv_heads, cfg.d_head)
        v = self._project(x, summary, self.v_proj, "v_proj_summary").view(b, length, cfg.n_kv_heads, cfg.d_head)
        return apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin), v

    def forward(self, x: torch.Tensor, summary: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape  # (B, L, d)
        q, k, v = self.qkv(x, summary, cos, sin)  # (B, L, H, D)
        out = masked_attention(q, k, v, mask, self.cfg.d_head**-0.5)  # (B, L, H, D)
        return self.o_proj(out.reshape(b, length, -1))


class KSABlock(nn.Module):
    def __init__(self, cfg: KSAConfig, ksa: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = KSAAttention(cfg, ksa)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x: torch.Tensor, summary: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), summary, cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class KSAModel(nn.Module):
    """Token ids (B, n) -> next-token logits (B, n, vocab) over the text positions."""

    def __init__(self, cfg: KSAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.summary_embed = nn.Embedding(cfg.summaries, cfg.d_model)
        self.layers = nn.ModuleList(KSABlock(cfg, cfg.is_ksa_layer(i)) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def interleave(self, text: torch.Tensor) -> torch.Tensor:
        """(B, n, d) text embeddings -> (B, L, d) with the summary embeddings after every complete chunk."""
        cfg = self.cfg
        b, n, d = text.shape
        chunks = n // cfg.chunk
        body = text[:, : chunks * cfg.chunk].reshape(b, chunks, cfg.chunk, d)  # (B, C, k, d)
        summ = self.summary_embed.weight[None, None].expand(b, chunks, cfg.summaries, d)  # (B, C, S, d)
        blocks = torch.cat([body, summ], dim=2).reshape(b, chunks * (cfg.chunk + cfg.summaries), d)
        return torch.cat([blocks, text[:, chunks * cfg.chunk :]], dim=1)  # (B, L, d)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final hidden states at every interleaved position (B, L, d), before the final norm."""
        cfg = self.cfg
        x = self.interleave(self.embed(tokens))
        length, device = x.shape[1], x.device
        summary = layout.is_summary(length, cfg.chunk, cfg.summaries, device)
        cos, sin = rope_angles(layout.positions(length, cfg.chunk, cfg.summaries, device), cfg.d_head, cfg.rope_theta)
        ksa = layout.ksa_mask(length, cfg.chunk, cfg.summaries, cfg.window, device)
        full = layout.text_causal_mask(length, cfg.chunk, cfg.summaries, device)
        for i, layer in enumerate(self.layers):
            x = layer(x, summary, cos, sin, ksa if cfg.is_ksa_layer(i) else full)
        return x

    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with the O(n/k + W*k) KSA cache: (B, n) -> (B, n + max_new_tokens); see ksa_generate."""
        from recfx.models.ksa_generate import generate

        return generate(self, prompt, max_new_tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = self.hidden(tokens)
        text = layout.text_positions(tokens.shape[1], cfg.chunk, cfg.summaries, x.device)
        return self.lm_head(self.norm(x[:, text]))  # summary states are dropped before the head


def ksa_inputs(cfg: KSAConfig, batch: int, gen: torch.Generator, dtype: torch.dtype,
               seq: int = 64) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, cfg.vocab, (batch, seq), generator=gen),)


def text_causal_pairs(n: int, chunk: int, summaries: int) -> int:
    """Allowed (query, key) pairs of :func:`~recfx.models.ksa_mask.text_causal_mask` over ``n`` text tokens."""
    chunks = n // chunk
    summary_rows = sum((c + 1) * chunk + 1 for c in range(chunks) for _ in range(summaries))
    return n * (n + 1) // 2 + summary_rows


def ksa_flops(cfg: KSAConfig, batch: int, seq: int) -> float:
    """Useful FLOPs of one forward over ``batch`` sequences of ``seq`` text tokens (2 per multiply-add).

    Counts what a fused implementation must compute: one q/k/v projection per position (text or summary), the
    o-projection and MLP at every interleaved position, attention only over allowed pairs (KSA mask in KSA layers,
    text-causal in full layers), and the head over text positions. The reference model computes more (both
    projection sets, dense L x L scores); counting that would overstate achieved TFLOP/s.
    """
    from recfx.kernels.ksa_reference import count_allowed_pairs

    length = layout.interleaved_length(seq, cfg.chunk, cfg.summaries)
    inner, kv_inner = cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
    per_position = 2 * cfg.d_model * (inner + 2 * kv_inner) + 2 * inner * cfg.d_model + 3 * 2 * cfg.d_model * cfg.d_ff
    ksa_pairs = count_allowed_pairs(length, cfg.chunk, cfg.summaries, cfg.window)
    full_pairs = text_causal_pairs(seq, cfg.chunk, cfg.summaries)
    total = 0.0
    for i in range(cfg.n_layers):
        pairs = ksa_pairs if cfg.is_ksa_layer(i) else full_pairs
        total += length * per_position + 4 * cfg.n_heads * cfg.d_head * pairs
    total += 2 * seq * cfg.d_model * cfg.vocab
    return batch * total
