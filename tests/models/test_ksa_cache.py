"""The KSA cache (spec §5): memory formula, one contiguous slice per step that holds exactly the §2-visible keys."""

from __future__ import annotations

import doctest

import pytest
import torch

from recfx.models import ksa_cache
from recfx.models.ksa_cache import (
    KSACacheLayout,
    KSALayerCache,
    TextKVCache,
    full_cache_bytes,
    ksa_cache_bytes,
)
from recfx.models.ksa_mask import interleaved_length, ksa_mask


def tagged(value: int) -> torch.Tensor:
    """A (1, 1, 1) k/v entry whose value is the interleaved position it came from."""
    return torch.full((1, 1, 1), float(value), dtype=torch.float64)


def slice_tags(cache: KSALayerCache | TextKVCache, lo: int, hi: int) -> list[int]:
    return sorted(int(x) for x in cache.k[0, lo:hi, 0, 0])


@pytest.mark.parametrize(("chunk", "summaries", "window"), [(4, 1, 2), (3, 2, 0), (2, 2, 3), (1, 1, 1)])
def test_slices_hold_exactly_the_visible_keys(chunk: int, summaries: int, window: int) -> None:
    """Token by token (text steps and summary steps), the slice is the mask row of that position, as a set."""
    n = (window + 4) * chunk + 1
    length = interleaved_length(n, chunk, summaries)
    mask = ksa_mask(length, chunk, summaries, window)
    cache = KSALayerCache(KSACacheLayout(chunk, summaries, window, n), 1, 1, 1, torch.float64, "cpu")
    block = chunk + summaries
    for pos in range(length):
        if pos % block < chunk:
            lo, hi = cache.append_text(tagged(pos), tagged(pos))
        else:
            j = pos % block - chunk
            lo, hi = cache.write_summary(j, tagged(pos), tagged(pos))
            if j == summaries - 1:
                assert slice_tags(cache, lo, hi) == torch.nonzero(mask[pos])[:, 0].tolist()
                cache.commit()
                continue
        assert slice_tags(cache, lo, hi) == torch.nonzero(mask[pos])[:, 0].tolist(), f"position {pos}"


def test_memory_formula_and_errors() -> None:
    lay = KSACacheLayout(chunk=8, summaries=1, window=128, capacity=131072)
    cache = KSALayerCache(lay, 2, 4, 16, torch.bfloat16, "meta")
    assert cache.nbytes == ksa_cache_bytes(131072, 8, 1, 128, 4, 16, torch.bfloat16)
    assert cache.nbytes == (1 + 8 + 128 * 8 + 131072 // 8) * 2 * 4 * 16 * 2
    assert full_cache_bytes(131072, 4, 16, torch.bfloat16) / cache.nbytes > 7.5  # ~k times smaller far away
    small = KSACacheLayout(chunk=2, summaries=1, window=1, capacity=2)
    c = KSALayerCache(small, 1, 1, 1, torch.float32, "cpu")
    c.append_text(tagged(0).float(), tagged(0).float())
    with pytest.raises(RuntimeError, match="write_summary needs a complete chunk"):
        c.write_summary(0, tagged(0).float(), tagged(0).float())
    c.append_text(tagged(1).float(), tagged(1).float())
    with pytest.raises(RuntimeError, match="summary step"):
        c.append_text(tagged(2).float(), tagged(2).float())
    c.write_summary(0, tagged(2).float(), tagged(2).float())
    c.commit()
    with pytest.raises(RuntimeError, match="full"):
        c.append_text(tagged(3).float(), tagged(3).float())
    with pytest.raises(ValueError, match="window >= 0"):
        KSACacheLayout(chunk=2, summaries=1, window=-1, capacity=4)


@pytest.mark.parametrize("n", [5, 8, 13])
def test_load_prefix_equals_stepping(n: int) -> None:
    """Filling from a prefill's interleaved k/v gives the same buffer as writing the tokens one by one."""
    chunk, summaries, window = 4, 1, 2
    length = interleaved_length(n, chunk, summaries)
    lay = KSACacheLayout(chunk, summaries, window, 16)
    stepped, loaded = (KSALayerCache(lay, 1, 1, 1, torch.float64, "cpu") for _ in range(2))
    for pos in range(length):
        if pos % (chunk + summaries) < chunk:
            stepped.append_text(tagged(pos), tagged(pos))
        else:
            stepped.write_summary(0, tagged(pos), tagged(pos))
            stepped.commit()
    tags = torch.arange(length, dtype=torch.float64).reshape(1, length, 1, 1)
    loaded.load_prefix(tags, tags)
    assert (loaded.n, loaded.ns) == (stepped.n, stepped.ns)
    lo, hi = stepped.append_text(tagged(length), tagged(length))  # the next token's view
    assert loaded.append_text(tagged(length), tagged(length)) == (lo, hi)
    torch.testing.assert_close(loaded.k[:, lo:hi], stepped.k[:, lo:hi])


def test_text_cache_for_full_layers() -> None:
    cache = TextKVCache(4, 2, 1, 1, 1, 1, torch.float64, "cpu")
    assert cache.append_text(tagged(0), tagged(0)) == (0, 1)
    assert cache.append_text(tagged(1), tagged(1)) == (0, 2)
    assert cache.write_summary(0, tagged(2), tagged(2)) == (0, 3)  # all text + itself, not kept
    cache.commit()
    assert cache.append_text(tagged(3), tagged(3)) == (0, 3) and slice_tags(cache, 0, 3) == [0, 1, 3]


def test_docstring_example() -> None:
    assert doctest.testmod(ksa_cache, raise_on_error=True).failed == 0
