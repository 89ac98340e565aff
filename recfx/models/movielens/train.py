"""Training of both MovieLens models, reproducible from a seed (same seed, same thread count -> same weights)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from recfx.config import ConfigBase
from recfx.models.movielens.data import MovieLens
from recfx.models.movielens.generative import GenerativeConfig, GenerativeRecommender
from recfx.models.movielens.ranking import RankingConfig, RankingModel
from recfx.models.movielens.semantic_ids import item_embeddings, residual_kmeans

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Optimiser settings. ``max_steps`` caps the steps of every epoch (a quick slice for tests); ``negatives`` is
    the number of random items per positive for the ranking model; ``embed_dim`` the SVD item-embedding size that
    the semantic ids are built from."""

    epochs: int = 3
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_steps: int | None = None
    negatives: int = 4
    embed_dim: int = 32

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.negatives < 1 or self.embed_dim < 1:
            raise ValueError("epochs, batch_size, negatives and embed_dim must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")


def _batches(n: int, cfg: TrainConfig, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    steps = range(0, n, cfg.batch_size)
    for step, start in enumerate(steps):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            return
        yield order[start : start + cfg.batch_size]


def semantic_ids(data: MovieLens, cfg: GenerativeConfig, train: TrainConfig) -> torch.Tensor:
    """(n_items + 1, levels) codes: residual k-means over SVD item embeddings of the training interactions."""
    emb = item_embeddings(data.sequences, data.n_items, train.embed_dim)
    return residual_kmeans(emb, cfg.levels, cfg.codes, seed=train.seed)


def train_generative(data: MovieLens, cfg: GenerativeConfig, train: TrainConfig) -> GenerativeRecommender:
    """Build the semantic ids, then minimise the teacher-forced code cross-entropy; returns the model in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = GenerativeRecommender(cfg)
        model.get_buffer("item_codes").copy_(semantic_ids(data, cfg, train))
        histories, targets, _ = data.train_examples(cfg.history)
        opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        gen = torch.Generator().manual_seed(train.seed)
        model.train()
        for epoch in range(train.epochs):
            start, total, steps = time.perf_counter(), 0.0, 0
            for idx in _batches(targets.numel(), train, gen):
                loss = model.loss(histories[idx], targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + float(loss.detach()), steps + 1
            log.info("generative epoch %d: loss %.4f over %d steps, %.1f s", epoch, total / max(steps, 1), steps,
                     time.perf_counter() - start)
    return model.eval()


def train_ranking(data: MovieLens, cfg: RankingConfig, train: TrainConfig) -> RankingModel:
    """Binary cross-entropy of each training positive against ``train.negatives`` uniformly drawn items."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = RankingModel(cfg)
        counts = data.train_counts().float()
        users_seen = torch.tensor([len(s) - 2 for s in data.sequences], dtype=torch.float32)
        model.set_counts(counts, users_seen)
        recent, targets, users = data.train_examples(max(cfg.recent, 1))
        recent = recent[:, recent.shape[1] - cfg.recent :]
        opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        gen = torch.Generator().manual_seed(train.seed)
        model.train()
        neg = train.negatives
        labels_one = torch.cat([torch.ones(1), torch.zeros(neg)])
        for epoch in range(train.epochs):
            start, total, steps = time.perf_counter(), 0.0, 0
            for idx in _batches(targets.numel(), train, gen):
                b = idx.numel()
                negatives = torch.randint(1, cfg.n_items + 1, (b, neg), generator=gen)
                candidates = torch.cat([targets[idx, None], negatives], dim=1).flatten()  # (b * (1 + neg),)
                probs = model(users[idx].repeat_interleave(neg + 1), recent[idx].repeat_interleave(neg + 1, dim=0),
                              candidates)
                loss = F.binary_cross_entropy(probs.clamp(1e-7, 1 - 1e-7), labels_one.repeat(b))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, steps = total + float(loss.detach()), steps + 1
            log.info("ranking epoch %d: loss %.4f over %d steps, %.1f s", epoch, total / max(steps, 1), steps,
                     time.perf_counter() - start)
    return model.eval()
