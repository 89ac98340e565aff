"""The Kwai Summary Attention layout and visibility rules (docs/ksa.md), vectorised."""

from __future__ import annotations

import torch


def interleaved_length(n: int, chunk: int, summaries: int) -> int:
    """Positions after inserting ``summaries`` tokens after every complete chunk of ``chunk`` text tokens."""
    return n + (n // chunk) * summaries


def is_summary(length: int, chunk: int, summaries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(L,) bool: which interleaved positions hold summary tokens."""
    pos = torch.arange(length, device=device)
    return pos % (chunk + summaries) >= chunk


def positions(length: int, chunk: int, summaries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(L,) RoPE positions: text tokens keep their text index; summary slot j (1..S) of chunk c gets
    c*k + floor(j*k/S) - 1."""
    block = chunk + summaries
    pos = torch.arange(length, device=device)
    c, o = pos // block, pos % block
    slot = o - chunk + 1  # 1..S on summary positions
    summary_pos = c * chunk + torch.div(slot * chunk, summaries, rounding_mode="floor") - 1
    return torch.where(o >= chunk, summary_pos, c * chunk + o)


def text_positions(n: int, chunk: int, summaries: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n,) interleaved index of each text token."""
    i = torch.arange(n, device=device)
    return (i // chunk) * (chunk + summaries) + i % chunk


def ksa_mask(length: int, chunk: int, summaries: int, window: int,
             device: torch.device | str | None = None) -> torch.Tensor:
    """(L, L) bool visibility of the spec's §2 (True = query row may attend key column)."""
    q = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return ksa_visibility(q, j, chunk, summaries, window)


def ksa_visibility(q: torch.Tensor, j: torch.Tensor, chunk: int, summaries: int, window: int) -> torch.Tensor:
    """The spec's §2 rule for interleaved query positions ``q`` and key positions ``j`` (broadcast together).

    ``ksa_mask`` is this rule over all pairs; references use it for a subset of query rows.
    """
    block = chunk + summaries
    qc, kc = q // block, j // block
    q_sum, k_sum = q % block >= chunk, j % block >= chunk
    causal = j <= q
    summary_row = q_sum & (kc == qc) & causal
    text_row = ~q_sum & causal & ((~k_sum & (qc - kc <= window)) | (k_sum & (qc - kc > window)))
    return summary_row | text_row


def text_causal_mask(length: int, chunk: int, summaries: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """(L, L) bool for the full layers of a hybrid stack: causal attention over text keys only.

    Every position (summary positions too) sees all earlier text tokens and itself, never a summary key.
    """
    q = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    k_sum = j % (chunk + summaries) >= chunk
    return (j <= q) & (~k_sum | (j == q))


def allowed_pairs(n: int, chunk: int, summaries: int, window: int) -> int:
    """Number of allowed (query, key) pairs of the KSA mask over ``n`` text tokens (for useful-FLOP counts)."""
    length = interleaved_length(n, chunk, summaries)
    return int(ksa_mask(length, chunk, summaries, window).sum())
