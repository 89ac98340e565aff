"""A classic DLRM-style recommender: embedding tables + dense features, dot interaction, MLPs, CTR."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from recfx.config import ConfigBase


@dataclasses.dataclass(frozen=True)
class DLRMConfig(ConfigBase):
    n_dense: int = 13
    table_rows: tuple[int, ...] = (1000,) * 8
    embed_dim: int = 16
    bottom_mlp: tuple[int, ...] = (64, 16)
    top_mlp: tuple[int, ...] = (64, 32)

    def validate(self) -> None:
        if self.bottom_mlp[-1] != self.embed_dim:
            raise ValueError(f"the bottom MLP must end at embed_dim ({self.embed_dim}), got {self.bottom_mlp}")
        if not self.table_rows or min(self.table_rows) < 1:
            raise ValueError(f"table_rows must be positive, got {self.table_rows}")


def _mlp(sizes: list[int], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_act or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """dense (B, n_dense) float, sparse (B, tables) int64 ids -> click probability (B, 1)."""

    def __init__(self, cfg: DLRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tables = nn.ModuleList(nn.Embedding(rows, cfg.embed_dim) for rows in cfg.table_rows)
        self.bottom = _mlp([cfg.n_dense, *cfg.bottom_mlp], last_act=True)
        features = len(cfg.table_rows) + 1
        rows, cols = torch.triu_indices(features, features, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)
        self.top = _mlp([cfg.embed_dim + rows.numel(), *cfg.top_mlp, 1], last_act=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)  # (B, E)
        embs = [table(sparse[:, i]) for i, table in enumerate(self.tables)]
        feats = torch.stack([x, *embs], dim=1)  # (B, F, E)
        inter = feats @ feats.transpose(1, 2)  # (B, F, F)
        rows, cols = self.get_buffer("pair_rows"), self.get_buffer("pair_cols")
        pairs = inter[:, rows, cols]  # (B, F*(F-1)/2)
        return torch.sigmoid(self.top(torch.cat([x, pairs], dim=1)))


def dlrm_inputs(cfg: DLRMConfig, batch: int, gen: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    dense = torch.randn(batch, cfg.n_dense, generator=gen).to(dtype)
    sparse = torch.stack([torch.randint(0, rows, (batch,), generator=gen) for rows in cfg.table_rows], dim=1)
    return dense, sparse
