"""A small OneRec-style generative recommender for MovieLens: user history -> context, lazy decoder, beam search.

The decoder is :class:`recfx.models.onerec.OneRecModel` unchanged; this module adds what real data needs in front of
it: an item embedding table (index 0 pads) whose outputs, plus learned positions, form two pathways (the last
``recent`` items and the whole ``history`` window), and the table of 3-level semantic ids of the items (a buffer, so
a checkpoint carries it). Training is teacher-forced: :meth:`GenerativeRecommender.loss` runs the same
``OneRecModel.step`` that beam search runs, once per level.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from recfx.config import ConfigBase
from recfx.models.onerec import OneRecConfig, OneRecModel


@dataclasses.dataclass(frozen=True)
class GenerativeConfig(ConfigBase):
    """Sizes of :class:`GenerativeRecommender` (defaults: about 0.3 M parameters, trains in minutes on a CPU)."""

    n_items: int
    history: int = 30
    recent: int = 10
    d_item: int = 64
    d_model: int = 64
    n_heads: int = 4
    d_head: int = 16
    kv_groups: int = 2
    n_layers: int = 2
    d_ff: int = 128
    codes: int = 64  # codes per semantic-id level
    levels: int = 3
    beam: int = 32

    def validate(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if not 1 <= self.recent <= self.history:
            raise ValueError(f"recent must be in [1, history={self.history}], got {self.recent}")
        self.decoder_config()  # validates the decoder's sizes

    def decoder_config(self) -> OneRecConfig:
        return OneRecConfig(d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head, kv_groups=self.kv_groups,
                            kv_layers=1, kv_sets=2, n_layers=self.n_layers, n_moe_layers=0, d_ff=self.d_ff,
                            pathway_tokens=(self.recent, self.history), pathway_dim=self.d_item, vocab=self.codes,
                            levels=self.levels, beam=self.beam)


class GenerativeRecommender(nn.Module):
    """``forward(history)``: history (B, history) item indices, left-padded with 0 -> ``(codes, scores)``: the
    beams' semantic ids (B, beam, levels) best first and their log-probabilities (B, beam)."""

    def __init__(self, cfg: GenerativeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_embed = nn.Embedding(cfg.n_items + 1, cfg.d_item, padding_idx=0)
        self.pos_embed = nn.Parameter(torch.randn(cfg.history, cfg.d_item) * 0.02)
        self.decoder = OneRecModel(cfg.decoder_config())
        self.register_buffer("item_codes", torch.zeros(cfg.n_items + 1, cfg.levels, dtype=torch.long))

    def pathways(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.item_embed(history) + self.pos_embed  # (B, history, d_item)
        return x[:, -self.cfg.recent :], x  # recent behaviours, the whole window

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(*self.pathways(history))

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the summed cross-entropy of the target's codes, level by level (teacher forcing)."""
        kv = self.decoder.context(*self.pathways(history))
        codes = self.get_buffer("item_codes")[target]  # (B, levels)
        total = history.new_zeros((), dtype=torch.float32)
        for level in range(self.cfg.levels):
            logits = self.decoder.step(kv, codes[:, None, :level])[:, 0]  # (B, codes)
            total = total + F.cross_entropy(logits.float(), codes[:, level])
        return total
