"""Semantic ids: item embeddings from the training interactions, quantized by a residual k-means into 3 codes.

Item embeddings are the top singular vectors of the binary user x item matrix of training interactions (scaled by
the singular values): items watched by the same users land close together. Level 1 clusters the embeddings, level 2
clusters what level 1 leaves over (embedding - its centroid), level 3 the rest, as in RQ-VAE / TIGER-style ids but
with k-means codebooks. Several items may share one code triple; :func:`code_table` lists them.
"""

from __future__ import annotations

import torch


def item_embeddings(sequences: tuple[tuple[int, ...], ...], n_items: int, dim: int) -> torch.Tensor:
    """(n_items + 1, dim) float32 SVD item factors from each user's training items (all but the last two)."""
    matrix = torch.zeros(len(sequences), n_items + 1, dtype=torch.float64)
    for u, seq in enumerate(sequences):
        matrix[u, list(seq[:-2])] = 1.0
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    dim = min(dim, s.numel())
    return (vh[:dim].T * s[:dim].sqrt()).float()  # (n_items + 1, dim)


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: ``(centroids (k, D), assignment (N,))``; empty clusters keep their
    centroid. Deterministic for a given generator."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= points ({n}), got k={k}")
    centroids = x[torch.randint(n, (1,), generator=gen)]
    for _ in range(1, k):  # k-means++: next seed drawn proportionally to the squared distance
        d2 = torch.cdist(x, centroids).pow(2).min(dim=1).values
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        centroids = torch.cat([centroids, x[torch.multinomial(probs, 1, generator=gen)]])
    assign = torch.cdist(x, centroids).argmin(dim=1)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(x.dtype)
        new = torch.cdist(x, centroids).argmin(dim=1)
        if torch.equal(new, assign):
            break
        assign = new
    return centroids, assign


def residual_kmeans(x: torch.Tensor, levels: int, codes: int, seed: int, iters: int = 50) -> torch.Tensor:
    """(N, levels) int64 codes in [0, codes): level l clusters the residual left by levels < l."""
    gen = torch.Generator().manual_seed(seed)
    residual = x.double()
    out = []
    for _ in range(levels):
        centroids, assign = kmeans(residual, codes, iters, gen)
        out.append(assign)
        residual = residual - centroids[assign]
    return torch.stack(out, dim=1)


def code_table(item_codes: torch.Tensor, popularity: torch.Tensor) -> dict[tuple[int, ...], list[int]]:
    """Code triple -> the items that carry it, most popular first (item 0, the padding, is left out)."""
    table: dict[tuple[int, ...], list[int]] = {}
    for item in range(1, item_codes.shape[0]):
        table.setdefault(tuple(item_codes[item].tolist()), []).append(item)
    for items in table.values():
        items.sort(key=lambda i: (-int(popularity[i]), i))
    return table
