"""The vectorised KSA mask against a per-query loop written directly from the spec (ksa.md section 2)."""

import pytest
import torch

from recfx.models import ksa_mask as layout


def spec_mask(length: int, k: int, s: int, w: int) -> torch.Tensor:
    block = k + s
    out = torch.zeros(length, length, dtype=torch.bool)
    for q in range(length):
        for j in range(length):
            qc, kc = q // block, j // block
            q_is_sum, k_is_sum = q % block >= k, j % block >= k
            causal = j <= q
            summary_row = q_is_sum and kc == qc and causal
            text_row = (not q_is_sum) and causal and (
                (not k_is_sum and qc - kc <= w) or (k_is_sum and qc - kc > w))
            out[q, j] = summary_row or text_row
    return out


@pytest.mark.parametrize("k, s", [(4, 1), (4, 2), (3, 2), (8, 1)])
@pytest.mark.parametrize("w", [0, 1, 3])
@pytest.mark.parametrize("n", [1, 7, 8, 13, 29, 41])  # inside one chunk, at boundaries, past several windows
def test_mask_matches_spec_loop(n, k, s, w):
    length = layout.interleaved_length(n, k, s)
    got = layout.ksa_mask(length, k, s, w)
    assert torch.equal(got, spec_mask(length, k, s, w))
    assert got.diagonal().all()  # every row sees itself


def test_mask_properties_from_the_spec():
    k, s, w = 4, 1, 1
    n = 30
    length = layout.interleaved_length(n, k, s)
    mask = layout.ksa_mask(length, k, s, w)
    summary = layout.is_summary(length, k, s)
    block = k + s
    for q in range(length):
        if summary[q]:  # a summary sees only its own chunk's text and itself
            assert set(torch.nonzero(mask[q]).flatten().tolist()) == set(range((q // block) * block, q + 1))
        else:  # a text token never sees its own chunk's summary or summaries inside its window
            seen_summaries = [j for j in torch.nonzero(mask[q]).flatten().tolist() if summary[j]]
            assert all(q // block - j // block > w for j in seen_summaries)


def test_layout_positions_and_text_index():
    k, s = 4, 2
    n = 10
    length = layout.interleaved_length(n, k, s)
    assert length == 14
    pos = layout.positions(length, k, s).tolist()
    # chunk 0: text 0..3, summary slots j=1,2 -> 0*4 + floor(j*4/2) - 1 = 1, 3; chunk 1 likewise 5, 7
    assert pos == [0, 1, 2, 3, 1, 3, 4, 5, 6, 7, 5, 7, 8, 9]
    assert layout.text_positions(n, k, s).tolist() == [0, 1, 2, 3, 6, 7, 8, 9, 12, 13]
    assert layout.is_summary(length, k, s).nonzero().flatten().tolist() == [4, 5, 10, 11]
    s1 = layout.positions(layout.interleaved_length(8, 4, 1), 4, 1).tolist()
    assert s1[4] == 3 and s1[9] == 7  # S=1: the summary takes the chunk's last text position


def test_text_causal_mask_excludes_summary_keys():
    m = layout.text_causal_mask(10, 4, 1)
    summary = layout.is_summary(10, 4, 1)
    for q in range(10):
        allowed = set(torch.nonzero(m[q]).flatten().tolist())
        assert allowed == {j for j in range(q + 1) if not summary[j]} | {q}


def test_allowed_pairs_counts_the_mask():
    assert layout.allowed_pairs(16, 4, 1, 1) == int(spec_mask(20, 4, 1, 1).sum())


@pytest.mark.parametrize("n, k, s", [(13, 4, 1), (16, 4, 2), (7, 8, 1)])
def test_text_causal_pairs_closed_form(n, k, s):
    from recfx.models.ksa import text_causal_pairs

    length = layout.interleaved_length(n, k, s)
    assert text_causal_pairs(n, k, s) == int(layout.text_causal_mask(length, k, s).sum())
