"""KSA decoding with the O(n/k + W*k) cache equals recomputing the whole prefix with the §2 mask, token by token."""

from __future__ import annotations

import doctest

import pytest
import torch

from recfx.models import KSAConfig, KSAModel, get_model, ksa_generate
from recfx.models.ksa_generate import KSADecoder, generate

#: float64 everywhere: decode and recompute differ only by summation order
ATOL = 1e-9


def tiny(chunk: int, summaries: int, window: int) -> KSAModel:
    cfg = KSAConfig(vocab=64, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, d_head=8, d_ff=48, chunk=chunk,
                    summaries=summaries, window=window)  # layers 0-2 KSA, layer 3 full (3:1)
    torch.manual_seed(chunk * 100 + summaries * 10 + window)
    return KSAModel(cfg).to(torch.float64).eval()


@pytest.mark.parametrize(("chunk", "summaries", "window"), [(2, 1, 2), (3, 2, 1), (4, 1, 0)])
def test_decode_equals_full_recompute(chunk: int, summaries: int, window: int) -> None:
    """Three chunk lengths; the sequence runs 3 chunks past the window; prompt ends mid-chunk."""
    model = tiny(chunk, summaries, window)
    total = (window + 4) * chunk + 1
    tokens = torch.randint(0, 64, (2, total))
    prompt = 2
    decoder = KSADecoder(model, batch=2, capacity=total)
    got = [decoder.prefill(tokens[:, :prompt])]
    for i in range(prompt, total - 1):
        got.append(decoder.step(tokens[:, i]))
    with torch.no_grad():
        for i, logits in enumerate(got):
            want = model(tokens[:, : prompt + i])[:, -1]
            torch.testing.assert_close(logits, want, rtol=0, atol=ATOL, msg=f"step {i}")


@pytest.mark.parametrize("prompt", [1, 4, 5, 9, 12])
def test_prefill_lengths(prompt: int) -> None:
    """Prompts ending inside a chunk, on a chunk boundary (summaries included), past the window."""
    model = tiny(4, 2, 1)
    tokens = torch.randint(0, 64, (1, prompt + 3))
    decoder = KSADecoder(model, batch=1, capacity=prompt + 3)
    got = [decoder.prefill(tokens[:, :prompt]), decoder.step(tokens[:, prompt]), decoder.step(tokens[:, prompt + 1])]
    with torch.no_grad():
        for i, logits in enumerate(got):
            torch.testing.assert_close(logits, model(tokens[:, : prompt + i])[:, -1], rtol=0, atol=ATOL)


def test_generate_matches_greedy_recompute_and_cache_is_small() -> None:
    spec = get_model("ksa-tiny")
    model = spec.build(dtype=torch.float64)
    prompt = torch.randint(0, spec.config.vocab, (2, 6))
    out = model.generate(prompt, 14)
    ref = prompt
    with torch.no_grad():
        for _ in range(14):
            ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    decoder = KSADecoder(model, batch=1, capacity=4096)
    cfg = spec.config
    per_token = 2 * cfg.n_kv_heads * cfg.d_head * 8  # bytes of one k/v entry pair, float64
    ksa_layers = sum(cfg.is_ksa_layer(i) for i in range(cfg.n_layers))
    ksa_slots = cfg.summaries + cfg.chunk + cfg.window * cfg.chunk + cfg.summaries * (4096 // cfg.chunk)
    assert decoder.nbytes == per_token * (ksa_layers * ksa_slots + (cfg.n_layers - ksa_layers) * 4097)


def test_bad_input() -> None:
    model = tiny(4, 1, 1)
    with pytest.raises(TypeError, match="token ids"):
        generate(model, torch.zeros(1, 3), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.int64), -1)
    with pytest.raises(TypeError, match="KSAModel"):
        KSADecoder(torch.nn.Linear(2, 2), 1, 4)  # type: ignore[arg-type]
    decoder = KSADecoder(model, 1, 4)
    decoder.prefill(torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="full"):
        decoder.step(torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(1, n\) token ids"):
        KSADecoder(model, 1, 8).prefill(torch.zeros(2, 3, dtype=torch.int64))
    decoder = KSADecoder(model, 2, 8)
    decoder.prefill(torch.zeros(2, 3, dtype=torch.int64))
    for bad in (torch.zeros(3, dtype=torch.int64), torch.zeros(2, 1, dtype=torch.int64)):
        with pytest.raises(ValueError, match=r"\(2,\) token ids"):
            decoder.step(bad)


def test_docstring_examples() -> None:
    assert doctest.testmod(ksa_generate, raise_on_error=True).failed == 0
