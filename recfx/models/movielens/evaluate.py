"""Top-k recommendations of both models over all users, Recall@k / NDCG@k, and the paired bootstrap.

Both models recommend only items the user has not seen in the split's history. The generative model's beams are
mapped to items through the semantic-id table (a code triple shared by several items yields them most popular
first; a triple no item carries is skipped); the ranking model scores every item. With one held-out item per user,
Recall@k is the hit rate and NDCG@k is ``1 / log2(rank + 1)`` at the target's 1-based rank (0 when missed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch

from recfx.models.movielens.data import MovieLens
from recfx.models.movielens.generative import GenerativeRecommender
from recfx.models.movielens.ranking import RankingModel
from recfx.models.movielens.semantic_ids import code_table

Runner = Callable[..., Any]  # the float model or a compiled module: same inputs, same outputs


def generative_top_k(run: Runner, model: GenerativeRecommender, data: MovieLens, split: str, k: int,
                     batch: int = 128) -> torch.Tensor:
    """(n_users, k) recommended item indices (0 where the beams yield fewer than k unseen items)."""
    histories, _ = data.split(split, model.cfg.history)
    table = code_table(model.get_buffer("item_codes").cpu(), data.train_counts())
    seen = data.seen(split)
    out = torch.zeros(data.n_users, k, dtype=torch.long)
    device = model.get_buffer("item_codes").device
    with torch.inference_mode():
        for start in range(0, data.n_users, batch):
            codes, _ = run(histories[start : start + batch].to(device))
            for row, beams in enumerate(codes.cpu().tolist()):
                picks = _unseen_items(beams, table, seen[start + row], k)
                out[start + row, : len(picks)] = torch.tensor(picks, dtype=torch.long)
    return out


def _unseen_items(beams: list[list[int]], table: dict[tuple[int, ...], list[int]], seen: set[int],
                  k: int) -> list[int]:
    picks: list[int] = []
    for beam in beams:
        for item in table.get(tuple(beam), ()):
            if item not in seen and item not in picks:
                picks.append(item)
                if len(picks) == k:
                    return picks
    return picks


def ranking_inputs(model: RankingModel, histories: torch.Tensor, users: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (user, item) pair of the users: ``(users, recent, candidates)`` with users.numel() * n_items rows."""
    n_items, recent = model.cfg.n_items, model.cfg.recent
    b = users.numel()
    candidates = torch.arange(1, n_items + 1, device=users.device).repeat(b)  # (b * n_items,)
    last = histories[:, histories.shape[1] - recent :].repeat_interleave(n_items, dim=0)  # (b * n_items, recent)
    return users.repeat_interleave(n_items), last, candidates


def ranking_top_k(run: Runner, model: RankingModel, data: MovieLens, split: str, k: int,
                  batch: int = 32) -> torch.Tensor:
    """(n_users, k) highest-scored unseen item indices of every user."""
    histories, _ = data.split(split, max(model.cfg.recent, 1))
    seen = data.seen(split)
    device = model.get_buffer("item_counts").device
    out = torch.zeros(data.n_users, k, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, data.n_users, batch):
            users = torch.arange(start, min(start + batch, data.n_users), device=device)
            scores = run(*ranking_inputs(model, histories[users.cpu()].to(device), users))
            scores = scores.float().cpu().view(users.numel(), model.cfg.n_items)  # (b, n_items): item i at i - 1
            for row in range(users.numel()):
                scores[row, [i - 1 for i in seen[start + row]]] = -math.inf
            out[start : start + users.numel()] = scores.topk(k, dim=1).indices + 1
    return out


def example_inputs(model: torch.nn.Module, data: MovieLens, split: str, users: int, device: str | torch.device = "cpu",
                   first: int = 0) -> tuple[torch.Tensor, ...]:
    """The model's inputs for users ``first .. first + users - 1`` of ``split`` (real histories): one history each
    for the generative model, every (user, item) pair for the ranking model. Wraps around past the last user."""
    ids = torch.arange(first, first + users) % data.n_users
    if isinstance(model, GenerativeRecommender):
        histories, _ = data.split(split, model.cfg.history)
        return (histories[ids].to(device),)
    if isinstance(model, RankingModel):
        histories, _ = data.split(split, max(model.cfg.recent, 1))
        return ranking_inputs(model, histories[ids].to(device), ids.to(device))
    raise TypeError(f"expected a GenerativeRecommender or RankingModel, got {type(model).__name__}")


def top_k(run: Runner, model: torch.nn.Module, data: MovieLens, split: str, k: int) -> torch.Tensor:
    """Dispatch to :func:`generative_top_k` or :func:`ranking_top_k`."""
    if isinstance(model, GenerativeRecommender):
        return generative_top_k(run, model, data, split, k)
    if isinstance(model, RankingModel):
        return ranking_top_k(run, model, data, split, k)
    raise TypeError(f"expected a GenerativeRecommender or RankingModel, got {type(model).__name__}")


def recall_ndcg(recommended: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user Recall@k and NDCG@k (float64, (n_users,) each) of one held-out target per user.

    Example:
        >>> recall_ndcg(torch.tensor([[5, 7], [1, 2]]), torch.tensor([7, 3]))
        (tensor([1., 0.], dtype=torch.float64), tensor([0.6309, 0.0000], dtype=torch.float64))
    """
    if recommended.dim() != 2 or targets.shape != recommended.shape[:1]:
        raise ValueError(f"expected recommended (U, k) and targets (U,), got {tuple(recommended.shape)} and "
                         f"{tuple(targets.shape)}")
    hit = recommended == targets[:, None]  # (U, k)
    rank = torch.arange(1, recommended.shape[1] + 1, dtype=torch.float64)
    gain = (hit.double() / torch.log2(rank + 1)).sum(dim=1)
    return hit.any(dim=1).double(), gain


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of ``candidate - baseline`` over users and its paired-bootstrap percentile interval."""

    baseline: float
    candidate: float
    diff: float
    low: float
    high: float
    level: float

    @property
    def relative(self) -> float:
        """``diff / baseline`` (nan when the baseline is 0)."""
        return self.diff / self.baseline if self.baseline else math.nan

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | bool]:
        return {**dataclasses.asdict(self), "relative": self.relative, "contains_zero": self.contains_zero}


def paired_bootstrap(baseline: torch.Tensor, candidate: torch.Tensor, resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> PairedDifference:
    """Resample users with replacement (the same users for both: paired) and take the percentile interval of the
    mean difference.

    Raises:
        ValueError: the per-user vectors differ in shape or are empty, or ``resamples`` / ``level`` are out of range.
    """
    if baseline.shape != candidate.shape or baseline.dim() != 1 or baseline.numel() == 0:
        raise ValueError(f"expected two per-user vectors of one length, got {tuple(baseline.shape)} and "
                         f"{tuple(candidate.shape)}")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples} and {level}")
    delta = (candidate - baseline).double()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(delta.numel(), (resamples, delta.numel()), generator=gen)
    means = delta[idx].mean(dim=1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return PairedDifference(float(baseline.double().mean()), float(candidate.double().mean()), float(delta.mean()),
                            low, high, level)
