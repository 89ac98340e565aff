"""KV caches for KSA decoding (docs/ksa.md): O(n/k + W*k) per KSA layer, one contiguous slice.

A KSA layer keeps one buffer per layer (k and v stacked), laid out as

    [ scratch S | current chunk k | ring of W*k text tokens | summaries in time order | headroom ]

- The current chunk is filled from its right end (offset o at ``S + k - 1 - o``) and the ring holds the last W
  complete chunks at slot ``c % W`` (each as it was in the current chunk, reversed), filled from its start; the
  summaries of chunks older than the window are the oldest ``ns - W*S`` entries of the summary region. So a text
  token sees ONE contiguous slice.
- At a chunk's end the S summary tokens are written into the scratch (slot j at ``S - 1 - j``), so summary slot j
  sees ``[S - 1 - j, S + k)``: earlier slots, itself and its chunk's text. ``commit`` then moves the chunk into the
  ring (over the oldest chunk) and appends the summaries.
Full (text-causal) layers of a hybrid stack use :class:`TextKVCache` (every text token, plus one headroom slot).
"""

from __future__ import annotations

import dataclasses

import torch

from recfx.kernels.ksa_reference import decode_reference, split_length
from recfx.ops import ksa_layout as layout

#: dtypes that run the Triton decode kernel on CUDA (the reference runs otherwise)
KERNEL_DTYPES = (torch.bfloat16, torch.float16)


def ksa_cache_bytes(n: int, chunk: int, summaries: int, window: int, kv_heads: int, head_dim: int,
                    dtype: torch.dtype) -> int:
    """Spec §5 memory per KSA layer and sequence: (S + k + W*k + S*floor(n/k)) * 2 * kv_heads * head_dim * bytes."""
    slots = summaries + chunk + window * chunk + summaries * (n // chunk)
    return slots * 2 * kv_heads * head_dim * dtype.itemsize


def full_cache_bytes(n: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """A full-attention KV cache of n tokens, per layer and sequence."""
    return n * 2 * kv_heads * head_dim * dtype.itemsize


def decode_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, H, D) over every key of k/v (B, T, Hkv, D): the Triton kernel on CUDA in bf16/fp16, else the reference."""
    if q.is_cuda and q.dtype in KERNEL_DTYPES:
        from recfx.kernels.ksa_decode import decode_attention

        return decode_attention(q, k, v, scale)
    return decode_reference(q, k, v, scale)


class _KVBuffer:
    """One (2, B, slots, Hkv, D) buffer holding keys (index 0) and values (index 1)."""

    kv: torch.Tensor

    @property
    def k(self) -> torch.Tensor:
        return self.kv[0]

    @property
    def v(self) -> torch.Tensor:
        return self.kv[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer per sequence."""
        return self.kv.numel() * self.kv.element_size() // self.kv.shape[1]


@dataclasses.dataclass(frozen=True)
class KSACacheLayout:
    """Offsets of the regions of one KSA layer's buffer, for up to ``capacity`` text tokens."""

    chunk: int
    summaries: int
    window: int
    capacity: int

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.summaries < 1 or self.window < 0 or self.capacity < 1:
            raise ValueError(f"need chunk >= 1, summaries >= 1, window >= 0, capacity >= 1; got {self}")

    @property
    def current(self) -> int:
        return self.summaries

    @property
    def ring(self) -> int:
        return self.summaries + self.chunk

    @property
    def summary(self) -> int:
        return self.ring + self.window * self.chunk

    @property
    def slots(self) -> int:
        return self.summary + self.summaries * (self.capacity // self.chunk)


class KSALayerCache(_KVBuffer):
    """One KSA layer's cache for a batch of sequences of equal length (spec §5).

    Args:
        layout: region offsets and capacity. batch, kv_heads, head_dim, dtype, device: of the k/v entries.

    Example:
        >>> cache = KSALayerCache(KSACacheLayout(chunk=4, summaries=1, window=2, capacity=64), 1, 2, 8,
        ...                       torch.float32, "cpu")
        >>> cache.append_text(torch.randn(1, 2, 8), torch.randn(1, 2, 8))
        (4, 5)
        >>> cache.nbytes == ksa_cache_bytes(64, 4, 1, 2, 2, 8, torch.float32)
        True
    """

    def __init__(self, layout: KSACacheLayout, batch: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        self.layout = layout
        self.kv = torch.zeros((2, batch, layout.slots, kv_heads, head_dim), dtype=dtype, device=device)
        self.n = 0  # text tokens so far
        self.ns = 0  # summary entries committed

    @property
    def pending_summary(self) -> bool:
        """True when a chunk is complete and its summary step has not run yet."""
        return self.n // self.layout.chunk * self.layout.summaries > self.ns

    def visible(self) -> tuple[int, int]:
        """[lo, hi) of the keys the latest text token sees: its chunk so far, the ring, the old summaries."""
        lay = self.layout
        offset = (self.n - 1) % lay.chunk
        chunks = (self.n - 1) // lay.chunk  # complete chunks before the token's own
        hi = lay.ring + min(chunks, lay.window) * lay.chunk + max(0, self.ns - lay.window * lay.summaries)
        return lay.ring - 1 - offset, hi

    def append_text(self, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
        """Write one text token's k/v (B, Hkv, D); returns the [lo, hi) slice it attends to.

        Raises:
            RuntimeError: the previous chunk's summary step has not run, or the capacity is full.
        """
        lay = self.layout
        if self.pending_summary:
            raise RuntimeError("chunk complete: run its summary step (write_summary + commit) before the next token")
        if self.n >= lay.capacity:
            raise RuntimeError(f"KSA cache is full ({lay.capacity} text tokens); build it with a larger capacity")
        slot = lay.ring - 1 - self.n % lay.chunk
        self.kv[0, :, slot], self.kv[1, :, slot] = k, v
        self.n += 1
        return self.visible()

    def write_summary(self, j: int, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
        """Write summary slot j's k/v (slots in order 0..S-1); returns its slice: slots <= j and the chunk's text."""
        lay = self.layout
        if not self.pending_summary:
            raise RuntimeError("write_summary needs a complete chunk whose summary step has not run")
        self.kv[0, :, lay.summaries - 1 - j], self.kv[1, :, lay.summaries - 1 - j] = k, v
        return lay.summaries - 1 - j, lay.ring

    def commit(self) -> None:
        """After the summary step: the chunk goes into the ring (over the oldest), its summaries are appended."""
        lay = self.layout
        c = self.n // lay.chunk - 1
        if lay.window:
            ring = lay.ring + (c % lay.window) * lay.chunk
            self.kv[:, :, ring:ring + lay.chunk] = self.kv[:, :, lay.current:lay.ring]
        self.kv[:, :, lay.summary + self.ns:lay.summary + self.ns + lay.summaries] = \
            self.kv[:, :, :lay.summaries].flip(2)  # scratch holds slot j at S - 1 - j
        self.ns += lay.summaries

    def load_prefix(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Fill the empty cache from a prefill over an interleaved prompt: k/v (B, L, Hkv, D)."""
        lay = self.layout
        length = k.shape[1]
        n, n_sum = split_length(length, lay.chunk, lay.summaries)
        chunks, rest = divmod(n, lay.chunk)
        if self.n or n > lay.capacity or n_sum != chunks * lay.summaries:
            raise ValueError(f"load_prefix needs an empty cache and a whole interleaved prompt of at most "
                             f"{lay.capacity} text tokens; got {length} positions ({n} text, {n_sum} summaries)")
        text = layout.text_positions(n, lay.chunk, lay.summaries, k.device)
        kv = torch.stack([k, v])  # (2, B, L, Hkv, D)
        for c in range(max(0, chunks - lay.window), chunks):
            ring = lay.ring + (c % lay.window) * lay.chunk
            self.kv[:, :, ring:ring + lay.chunk] = kv[:, :, text[c * lay.chunk:(c + 1) * lay.chunk]].flip(2)
        summary = torch.nonzero(layout.is_summary(length, lay.chunk, lay.summaries, k.device))[:, 0]
        self.kv[:, :, lay.summary:lay.summary + n_sum] = kv[:, :, summary]
        if rest:  # the current chunk, reversed
            self.kv[:, :, lay.ring - rest:lay.ring] = kv[:, :, text[chunks * lay.chunk:]].flip(2)
        self.n, self.ns = n, n_sum


class TextKVCache(_KVBuffer):
    """A full layer's cache: every text token's k/v plus one headroom slot for a summary query's own key."""

    def __init__(self, capacity: int, chunk: int, summaries: int, batch: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        self.capacity, self.chunk, self.summaries = capacity, chunk, summaries
        self.kv = torch.zeros((2, batch, capacity + 1, kv_heads, head_dim), dtype=dtype, device=device)
        self.n = 0

    def append_text(self, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
        if self.n >= self.capacity:
            raise RuntimeError(f"text KV cache is full ({self.capacity} tokens); build it with a larger capacity")
        self.kv[0, :, self.n], self.kv[1, :, self.n] = k, v
        self.n += 1
        return 0, self.n

    def write_summary(self, j: int, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
        """A summary query in a full layer sees every text token and itself (headroom slot, not kept)."""
        self.kv[0, :, self.n], self.kv[1, :, self.n] = k, v
        return 0, self.n + 1

    def commit(self) -> None:
        """Nothing to keep: summaries are never keys of a full layer."""

    def load_prefix(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Fill the empty cache with the text entries of an interleaved prompt's k/v (B, L, Hkv, D)."""
        n, _ = split_length(k.shape[1], self.chunk, self.summaries)
        if self.n or n > self.capacity:
            raise ValueError(f"load_prefix needs an empty cache and at most {self.capacity} text tokens, got {n}")
        text = layout.text_positions(n, self.chunk, self.summaries, k.device)
        self.kv[:, :, :n] = torch.stack([k, v])[:, :, text]
        self.n = n
