"""Generation for :class:`~recfx.models.ksa.KSAModel` with the O(n/k + W*k) KSA cache (spec §5).

The prompt is run once (``recfx::ksa_attention`` in KSA layers) and its k/v fill the caches; every new text token
then attends to ONE contiguous slice per layer (``recfx/models/ksa_cache.py``), and when it completes a chunk
the S summary tokens run through all layers (summary projections, their RoPE positions) and are committed.
Decoding gives the same next-token distribution as recomputing the whole prefix with the §2 mask.

Limits: the full (text-causal) layers keep every text token and their prefill uses the dense reference attention
(an (L, L) mask): fine for tests and moderate prompts, quadratic in memory for very long ones.
"""

from __future__ import annotations

from typing import cast

import torch

import recfx.ops.ksa  # noqa: F401  (defines recfx::ksa_attention)
from recfx.models import ksa_mask as layout
from recfx.models.common import masked_attention, rope_angles
from recfx.models.ksa import KSABlock, KSAModel
from recfx.models.ksa_cache import (
    KSACacheLayout,
    KSALayerCache,
    TextKVCache,
    decode_attend,
)


class KSADecoder:
    """Incremental inference of a KSA model: ``prefill(prompt)`` then ``step(token)``, each returning logits.

    Args:
        model: a :class:`KSAModel` (eval mode). batch: sequences decoded together (equal lengths).
        capacity: the most text tokens (prompt + generated) the caches hold.

    Example:
        >>> from recfx.models import get_model
        >>> model = get_model("ksa-tiny").build()
        >>> dec = KSADecoder(model, batch=1, capacity=32)
        >>> dec.prefill(torch.tensor([[1, 2, 3, 4, 5]])).shape
        torch.Size([1, 512])
        >>> dec.step(torch.tensor([7])).shape
        torch.Size([1, 512])
    """

    def __init__(self, model: KSAModel, batch: int, capacity: int) -> None:
        if not isinstance(model, KSAModel):
            raise TypeError(f"KSADecoder needs a KSAModel, got {type(model).__name__}")
        if batch < 1 or capacity < 1:
            raise ValueError(f"batch and capacity must be >= 1, got {batch} and {capacity}")
        self.model, self.cfg = model, model.cfg
        self.layers = cast(list[KSABlock], list(model.layers))
        cfg = model.cfg
        weight = model.embed.weight
        shape = (batch, cfg.n_kv_heads, cfg.d_head, weight.dtype, weight.device)
        lay = KSACacheLayout(cfg.chunk, cfg.summaries, cfg.window, capacity)
        self.caches: list[KSALayerCache | TextKVCache] = [
            KSALayerCache(lay, *shape) if cfg.is_ksa_layer(i) else TextKVCache(capacity, cfg.chunk, cfg.summaries,
                                                                              *shape)
            for i in range(cfg.n_layers)]
        self.n = 0  # text tokens so far
        self.scale = cfg.d_head**-0.5

    @property
    def nbytes(self) -> int:
        """Cache bytes per sequence, all layers."""
        return sum(c.nbytes for c in self.caches)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the prompt (B, n) and fill the caches; returns the logits after its last token (B, vocab)."""
        model, cfg = self.model, self.cfg
        batch = self.caches[0].kv.shape[1]
        if tokens.dim() != 2 or tokens.shape[0] != batch:
            raise ValueError(f"prefill takes ({batch}, n) token ids (the decoder's batch), got {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if self.n or n < 1:
            raise ValueError(f"prefill needs a fresh decoder and a non-empty prompt, got {n} tokens after {self.n}")
        x = model.interleave(model.embed(tokens))  # (B, L, d)
        length, device = x.shape[1], x.device
        summary = layout.is_summary(length, cfg.chunk, cfg.summaries, device)
        cos, sin = rope_angles(layout.positions(length, cfg.chunk, cfg.summaries, device), cfg.d_head,
                               cfg.rope_theta)
        for i, (layer, cache) in enumerate(zip(self.layers, self.caches)):
            q, k, v = layer.attn.qkv(layer.attn_norm(x), summary, cos, sin)  # (B, L, H|Hkv, D)
            if cfg.is_ksa_layer(i):
                out = torch.ops.recfx.ksa_attention(q, k, v, cfg.chunk, cfg.summaries, cfg.window, self.scale)[0]
            else:
                mask = layout.text_causal_mask(length, cfg.chunk, cfg.summaries, device)
                out = masked_attention(q, k, v, mask, self.scale)
            cache.load_prefix(k, v)
            x = self._block_rest(layer, x, out)
        self.n = n
        last = layout.text_positions(n, cfg.chunk, cfg.summaries, device)[-1]
        return model.lm_head(model.norm(x[:, last]))

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append one text token per sequence (B,); returns the next-token logits (B, vocab)."""
        model, cfg = self.model, self.cfg
        batch = self.caches[0].kv.shape[1]
        if token.shape != (batch,):
            raise ValueError(f"step takes ({batch},) token ids (one per sequence), got {tuple(token.shape)}")
        x = model.embed(token)[:, None]  # (B, 1, d)
        cos, sin = rope_angles(torch.tensor([self.n], device=x.device), cfg.d_head, cfg.rope_theta)
        for layer, cache in zip(self.layers, self.caches):
            q, k, v = layer.attn.qkv(layer.attn_norm(x), False, cos, sin)  # (B, 1, H|Hkv, D)
            lo, hi = cache.append_text(k[:, 0], v[:, 0])
            out = decode_attend(q[:, 0], cache.k[:, lo:hi], cache.v[:, lo:hi], self.scale)  # (B, H, D)
            x = self._block_rest(layer, x, out[:, None])
        self.n += 1
        logits = model.lm_head(model.norm(x[:, 0]))
        if self.n % cfg.chunk == 0:
            self._summary_step()
        return logits

    def _summary_step(self) -> None:
        """The S summary tokens of the chunk just completed, through every layer; then the caches commit."""
        model, cfg = self.model, self.cfg
        c = self.n // cfg.chunk - 1
        weight = model.summary_embed.weight
        slot = torch.arange(1, cfg.summaries + 1, device=weight.device)
        positions = c * cfg.chunk + torch.div(slot * cfg.chunk, cfg.summaries, rounding_mode="floor") - 1
        cos, sin = rope_angles(positions, cfg.d_head, cfg.rope_theta)
        b = self.caches[0].kv.shape[1]
        x = weight[None].expand(b, cfg.summaries, weight.shape[1])  # (B, S, d)
        for layer, cache in zip(self.layers, self.caches):
            q, k, v = layer.attn.qkv(layer.attn_norm(x), True, cos, sin)  # (B, S, H|Hkv, D)
            outs = []
            for j in range(cfg.summaries):
                lo, hi = cache.write_summary(j, k[:, j], v[:, j])
                outs.append(decode_attend(q[:, j], cache.k[:, lo:hi], cache.v[:, lo:hi], self.scale))
            cache.commit()
            x = self._block_rest(layer, x, torch.stack(outs, 1))

    @staticmethod
    def _block_rest(layer: KSABlock, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """The rest of a KSABlock after attention: o_proj + residual, then the MLP; attn_out (B, T, H, D)."""
        b, t = attn_out.shape[:2]
        x = x + layer.attn.o_proj(attn_out.reshape(b, t, -1))
        return x + layer.mlp(layer.mlp_norm(x))


@torch.no_grad()
def generate(model: KSAModel, prompt: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy generation with the KSA caches: prompt (B, n) int64 -> (B, n + max_new_tokens).

    Raises:
        TypeError: not a KSAModel or not integer tokens. ValueError: empty prompt or negative length.

    Example:
        >>> from recfx.models import get_model
        >>> model = get_model("ksa-tiny").build()
        >>> generate(model, torch.tensor([[1, 2, 3]]), 4).shape
        torch.Size([1, 7])
    """
    if prompt.dim() != 2 or prompt.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"prompt must be (B, n) integer token ids, got {prompt.dtype} {tuple(prompt.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    decoder = KSADecoder(model, prompt.shape[0], prompt.shape[1] + max_new_tokens)
    logits = decoder.prefill(prompt)
    out = [prompt]
    for i in range(max_new_tokens):
        token = logits.argmax(-1)  # (B,)
        out.append(token[:, None].to(prompt.dtype))
        if i + 1 < max_new_tokens:
            logits = decoder.step(token)
    return torch.cat(out, dim=1)
