"""A DLRM-style ranking model for MovieLens: (user, candidate, last items) ids + popularity features -> P(next).

The scorer is :class:`recfx.models.dlrm.DLRM` unchanged (embedding tables, bottom MLP on dense features, pairwise dot
interaction, top MLP, sigmoid). Its sparse features are the user, the candidate item and the user's last ``recent``
items; its dense features are the candidate's and the user's training interaction counts (log-scaled), kept as
buffers so that the model takes ids only and a checkpoint carries everything it needs.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from recfx.config import ConfigBase
from recfx.models.dlrm import DLRM, DLRMConfig


@dataclasses.dataclass(frozen=True)
class RankingConfig(ConfigBase):
    n_users: int
    n_items: int
    recent: int = 3
    embed_dim: int = 32
    bottom_mlp: tuple[int, ...] = (64, 32)
    top_mlp: tuple[int, ...] = (128, 64)

    def validate(self) -> None:
        if self.n_users < 1 or self.n_items < 1:
            raise ValueError(f"n_users and n_items must be >= 1, got {self.n_users} and {self.n_items}")
        if self.recent < 0:
            raise ValueError(f"recent must be >= 0, got {self.recent}")
        self.dlrm_config()

    def dlrm_config(self) -> DLRMConfig:
        rows = (self.n_users, self.n_items + 1, *([self.n_items + 1] * self.recent))
        return DLRMConfig(n_dense=2, table_rows=rows, embed_dim=self.embed_dim, bottom_mlp=self.bottom_mlp,
                          top_mlp=self.top_mlp)


class RankingModel(nn.Module):
    """``forward(users (N,), recent (N, recent), candidates (N,))`` -> probability that the candidate is next (N,)."""

    def __init__(self, cfg: RankingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dlrm = DLRM(cfg.dlrm_config())
        self.register_buffer("item_counts", torch.zeros(cfg.n_items + 1))
        self.register_buffer("user_counts", torch.zeros(cfg.n_users))

    def set_counts(self, item_counts: torch.Tensor, user_counts: torch.Tensor) -> None:
        """Training interaction counts per item index and per user (the dense features' source)."""
        self.get_buffer("item_counts").copy_(item_counts)
        self.get_buffer("user_counts").copy_(user_counts)

    def forward(self, users: torch.Tensor, recent: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        items, people = self.get_buffer("item_counts"), self.get_buffer("user_counts")
        dense = torch.stack([torch.log1p(items[candidates]) / torch.log1p(items.max()),
                             torch.log1p(people[users]) / torch.log1p(people.max())], dim=1)  # (N, 2)
        sparse = torch.cat([users[:, None], candidates[:, None], recent], dim=1)  # (N, 2 + recent)
        return self.dlrm(dense, sparse)[:, 0]
