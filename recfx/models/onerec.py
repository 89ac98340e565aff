"""A OneRec-V2-like lazy decoder-only generative recommender (docs/architecture.md).

Pieces a deployment compiles: :class:`OneRecContext` (features -> context K/V, once per request),
:class:`OneRecStep` (K/V + beam tokens -> next-level logits) and :class:`OneRecModel` itself, whose ``forward`` is
one whole request: context, then 3 beam-search steps with top-k, unrolled into one static-shape graph.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from recfx.config import ConfigBase
from recfx.models.common import RMSNorm, SwiGLU, repeat_kv


@dataclasses.dataclass(frozen=True)
class OneRecConfig(ConfigBase):
    d_model: int
    n_heads: int
    d_head: int
    kv_groups: int  # G_kv: kv heads of the cross-attention
    kv_layers: int  # L_kv: number of K/V sets shared by groups of layers
    kv_sets: int  # S_kv: 2 -> separate K and V, 1 -> V = K
    n_layers: int
    n_moe_layers: int  # the last n_moe_layers use MoE FFNs
    d_ff: int
    n_experts: int = 0
    n_shared_experts: int = 0
    top_k: int = 0
    d_expert: int = 0
    pathway_tokens: tuple[int, ...] = (8, 64, 128)
    pathway_dim: int = 64
    vocab: int = 256  # codes per semantic-id level
    levels: int = 3
    beam: int = 16
    norm_eps: float = 1e-6

    def validate(self) -> None:
        if self.n_heads % self.kv_groups:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of kv_groups ({self.kv_groups})")
        if self.kv_sets not in (1, 2):
            raise ValueError(f"kv_sets must be 1 or 2, got {self.kv_sets}")
        if not 0 <= self.n_moe_layers <= self.n_layers:
            raise ValueError(f"n_moe_layers must be in [0, {self.n_layers}], got {self.n_moe_layers}")
        if self.n_moe_layers and not (self.n_experts and self.top_k and self.d_expert):
            raise ValueError("MoE layers need n_experts, top_k and d_expert")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds n_experts ({self.n_experts})")
        if self.beam > self.vocab:
            raise ValueError(f"beam ({self.beam}) cannot exceed the codes per level ({self.vocab})")

    @property
    def d_context(self) -> int:
        return self.kv_sets * self.kv_layers * self.kv_groups * self.d_head

    @property
    def context_tokens(self) -> int:
        return sum(self.pathway_tokens)


class ContextProcessor(nn.Module):
    """User-feature pathways -> K/V per KV set: (K_0, V_0, K_1, V_1, ...), each (B, T, G_kv, D)."""

    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pathways = nn.ModuleList(nn.Linear(cfg.pathway_dim, cfg.d_context) for _ in cfg.pathway_tokens)
        pieces = cfg.kv_layers * cfg.kv_sets
        self.norms = nn.ModuleList(RMSNorm(cfg.kv_groups * cfg.d_head, cfg.norm_eps) for _ in range(pieces))

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.cfg
        x = torch.cat([proj(f) for proj, f in zip(self.pathways, features)], dim=1)  # (B, T, d_context)
        b, t, _ = x.shape
        pieces = x.split(cfg.kv_groups * cfg.d_head, dim=-1)
        kv = [norm(p).view(b, t, cfg.kv_groups, cfg.d_head) for norm, p in zip(self.norms, pieces)]
        if cfg.kv_sets == 1:  # V = K
            kv = [x for k in kv for x in (k, k)]
        return tuple(kv)


class CrossAttention(nn.Module):
    """K/V-less GQA cross-attention: only Q and O projections; K/V come from the context processor."""

    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # all beams' target tokens of a request share one context: (B, K*t, d)
        groups = self.cfg.n_heads // self.cfg.kv_groups
        q = self.q_proj(x).view(b, n, self.cfg.n_heads, self.cfg.d_head).transpose(1, 2)  # (B, H, K*t, D)
        k, v = repeat_kv(k, groups).transpose(1, 2), repeat_kv(v, groups).transpose(1, 2)  # (B, H, T, D)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, K*t, D)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class SelfAttention(nn.Module):
    """Causal self-attention over the few target tokens of each beam."""

    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        inner = cfg.n_heads * cfg.d_head
        self.q_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape  # (B*K, t, d)
        shape = (n, t, self.cfg.n_heads, self.cfg.d_head)
        q, k, v = (p(x).view(shape).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))  # (N, H, t, D)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, -1))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts plus shared experts.

    Every expert runs on every token and is weighted by its (mostly zero) routing weight: static shapes that export
    and quantize cleanly. This wastes FLOPs at scale; a grouped-GEMM kernel is the GPU backends' business.
    """

    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.d_expert) for _ in range(cfg.n_experts))
        self.shared_experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.d_expert) for _ in range(cfg.n_shared_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.router(x), dim=-1)  # (..., E)
        top_w, top_i = probs.topk(self.top_k, dim=-1)  # (..., k)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_w)  # (..., E), zero for unrouted experts
        out = sum(e(x) for e in self.shared_experts) if len(self.shared_experts) else torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            out = out + weights[..., i : i + 1] * expert(x)
        return out


class LazyDecoderBlock(nn.Module):
    """Pre-norm block: cross-attention to the context, causal self-attention over targets, SwiGLU or MoE FFN."""

    def __init__(self, cfg: OneRecConfig, moe: bool) -> None:
        super().__init__()
        self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.cross_attn = CrossAttention(cfg)
        self.self_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = SelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn: nn.Module = MoE(cfg) if moe else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, beams, t, d = x.shape  # (B, K, t, d)
        x = x + self.cross_attn(self.cross_norm(x).reshape(b, beams * t, d), k, v).view(b, beams, t, d)
        x = x + self.self_attn(self.self_norm(x).reshape(b * beams, t, d)).view(b, beams, t, d)
        return x + self.ffn(self.ffn_norm(x))


class OneRecModel(nn.Module):
    """The whole generative recommender; ``forward(*features)`` serves one batch of requests.

    Returns ``(items, scores)``: items (B, beam, levels) semantic ids in [0, vocab), scores (B, beam) log-probs,
    best first.
    """

    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.context = ContextProcessor(cfg)
        self.bos = nn.Parameter(torch.randn(cfg.d_model) * 0.02)
        self.code_embed = nn.ModuleList(nn.Embedding(cfg.vocab, cfg.d_model) for _ in range(cfg.levels))
        self.pos_embed = nn.Embedding(cfg.levels + 1, cfg.d_model)
        first_moe = cfg.n_layers - cfg.n_moe_layers
        self.layers = nn.ModuleList(LazyDecoderBlock(cfg, moe=i >= first_moe) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.vocab, bias=False) for _ in range(cfg.levels))

    def kv_set(self, layer: int) -> int:
        """Which context K/V set layer ``layer`` reads: floor(layer * L_kv / n_layers)."""
        return layer * self.cfg.kv_layers // self.cfg.n_layers

    def step(self, kv: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
        """Next-level logits for each beam: tokens (B, K, t) with t < levels -> logits (B, K, vocab)."""
        b, beams, t = tokens.shape
        emb = [self.bos.expand(b, beams, 1, self.cfg.d_model)]
        emb += [self.code_embed[i](tokens[:, :, i : i + 1]) for i in range(t)]
        x = torch.cat(emb, dim=2) + self.pos_embed.weight[: t + 1]  # (B, K, t+1, d)
        for i, layer in enumerate(self.layers):
            s = self.kv_set(i)
            x = layer(x, kv[2 * s], kv[2 * s + 1])
        return self.heads[t](self.norm(x[:, :, -1]))  # (B, K, vocab)

    def beam_search(self, kv: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``levels`` steps of beam search with beam ``cfg.beam``, unrolled (static shapes)."""
        b = kv[0].shape[0]
        vocab, beam = self.cfg.vocab, self.cfg.beam
        tokens = torch.zeros(b, 1, 0, dtype=torch.long, device=kv[0].device)
        scores = torch.zeros(b, 1, dtype=kv[0].dtype, device=kv[0].device)
        for _ in range(self.cfg.levels):
            logp = torch.log_softmax(self.step(kv, tokens).float(), dim=-1).to(scores.dtype)  # (B, K, V)
            total = (scores[:, :, None] + logp).flatten(1)  # (B, K*V)
            scores, flat = total.topk(beam, dim=-1)  # (B, beam)
            parent, code = flat // vocab, flat % vocab
            history = tokens.gather(1, parent[:, :, None].expand(b, beam, tokens.shape[2]))  # (B, beam, t)
            tokens = torch.cat([history, code[:, :, None]], dim=2)
        return tokens, scores

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.beam_search(self.context(*features))


class OneRecContext(nn.Module):
    """Deployment piece: features -> context K/V (computed once per request)."""

    def __init__(self, model: OneRecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.context(*features)


class OneRecStep(nn.Module):
    """Deployment piece: (K/V..., beam tokens) -> next-level logits."""

    def __init__(self, model: OneRecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        *kv, tokens = args
        return self.model.step(tuple(kv), tokens)


def onerec_inputs(cfg: OneRecConfig, batch: int, gen: torch.Generator, dtype: torch.dtype,
                  context_tokens: int | None = None) -> tuple[torch.Tensor, ...]:
    """One (B, T_p, F_p) tensor per pathway; ``context_tokens`` rescales the pathway lengths."""
    tokens = cfg.pathway_tokens
    if context_tokens is not None:
        total = sum(tokens)
        tokens = tuple(max(1, t * context_tokens // total) for t in tokens)
    return tuple(torch.randn(batch, t, cfg.pathway_dim, generator=gen).to(dtype) for t in tokens)


def onerec_step_inputs(model: OneRecModel, features: tuple[torch.Tensor, ...], t: int,
                       gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Inputs of :class:`OneRecStep` at step ``t``: the context K/V and random beam tokens (B, beam, t)."""
    with torch.no_grad():
        kv = model.context(*features)
    b = features[0].shape[0]
    tokens = torch.randint(0, model.cfg.vocab, (b, model.cfg.beam, t), generator=gen)
    return (*kv, tokens)


def onerec_flops(cfg: OneRecConfig, batch: int) -> float:
    """Approximate FLOPs of one request batch (linears and attention; 2 per multiply-add)."""
    h, d, t_ctx = cfg.n_heads * cfg.d_head, cfg.d_model, cfg.context_tokens
    total = 2.0 * batch * t_ctx * cfg.pathway_dim * cfg.d_context
    for step in range(cfg.levels):
        beams = 1 if step == 0 else cfg.beam
        n = batch * beams * (step + 1)  # target tokens in flight
        per_tok = 2 * d * h * 2 + 2 * d * h * 4  # cross q/o + self q/k/v/o
        per_tok += 2 * 2 * t_ctx * h  # cross-attention scores and values
        moe = cfg.n_moe_layers
        dense = cfg.n_layers - moe
        ffn = dense * 3 * 2 * d * cfg.d_ff + moe * 3 * 2 * d * cfg.d_expert * (cfg.n_experts + cfg.n_shared_experts)
        total += n * (cfg.n_layers * per_tok) + n * ffn + 2.0 * batch * beams * d * cfg.vocab
    return total
