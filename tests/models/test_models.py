import dataclasses

import pytest
import torch
from torch.export import Dim

from recfx.frontend import capture
from recfx.models import KSA_CONFIGS, MODELS, ONEREC_CONFIGS, OneRecContext, OneRecModel, OneRecStep, get_model
from recfx.models.onerec import onerec_step_inputs


def test_registry_has_the_reference_models():
    assert set(MODELS.names()) >= {"onerec-tiny", "onerec-1b", "onerec-moe", "ksa-tiny", "ksa-1b", "dlrm-small"}
    assert ONEREC_CONFIGS["onerec-1b"].d_context == 2 * 1 * 4 * 128
    assert ONEREC_CONFIGS["onerec-tiny"].context_tokens == 200
    big = KSA_CONFIGS["ksa-1b"]
    assert (big.n_layers, big.d_model, big.n_heads, big.d_head, big.d_ff, big.chunk, big.summaries, big.window) == (
        24, 2048, 16, 128, 6144, 8, 1, 128)
    assert sum(big.is_ksa_layer(i) for i in range(24)) == 18  # 3:1 hybrid


def test_builds_are_deterministic():
    spec = get_model("dlrm-small")
    a, b = spec.build(seed=3), spec.build(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), spec.build(seed=4).parameters()))
    x1, x2 = spec.example_inputs(4, seed=1), spec.example_inputs(4, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(x1, x2))


@pytest.mark.parametrize("name", ["onerec-tiny", "ksa-tiny", "dlrm-small"])
def test_every_model_captures_with_a_dynamic_batch(name):
    spec = get_model(name)
    model = spec.build(dtype=torch.float64)
    g = capture(model, spec.example_inputs(2, dtype=torch.float64))
    assert all(spec_.shape[0] == "batch" for spec_ in g.input_specs)
    for batch in (1, 5):
        x = spec.example_inputs(batch, seed=batch, dtype=torch.float64)
        with torch.no_grad():
            want, got = model(*x), g.graph_module(*x)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        for w, o in zip(want, got):
            assert o.shape[0] == batch
            torch.testing.assert_close(o, w, rtol=1e-12, atol=1e-12)


def test_onerec_beam_search_is_deterministic_and_valid():
    spec = get_model("onerec-tiny")
    model = spec.build(dtype=torch.float64)
    x = spec.example_inputs(3, dtype=torch.float64)
    with torch.no_grad():
        items, scores = model(*x)
        items2, scores2 = model(*x)
    cfg = model.cfg
    assert items.shape == (3, cfg.beam, cfg.levels) and scores.shape == (3, cfg.beam)
    assert torch.equal(items, items2) and torch.equal(scores, scores2)
    assert items.min() >= 0 and items.max() < cfg.vocab and items.dtype == torch.long
    assert (scores[:, :-1] >= scores[:, 1:]).all() and (scores <= 0).all()  # sorted log-probs
    for b in range(3):  # beams are distinct items
        assert len({tuple(r) for r in items[b].tolist()}) == cfg.beam


def test_onerec_beam_score_is_the_sum_of_step_log_probs():
    spec = get_model("onerec-tiny")
    model = spec.build(dtype=torch.float64)
    x = spec.example_inputs(1, dtype=torch.float64)
    with torch.no_grad():
        items, scores = model(*x)
        kv = model.context(*x)
        best = items[:, :1]  # (1, 1, 3)
        total = torch.zeros((), dtype=torch.float64)
        for t in range(3):
            logp = torch.log_softmax(model.step(kv, best[:, :, :t]), -1)
            total += logp[0, 0, best[0, 0, t]]
    torch.testing.assert_close(total, scores[0, 0])


def test_onerec_deployment_pieces_capture():
    spec = get_model("onerec-tiny")
    model = spec.build()
    feats = spec.example_inputs(2)
    ctx = capture(OneRecContext(model).eval(), feats)
    assert len(ctx.output_specs) == 2 and ctx.output_specs[0].shape == ("batch", 200, 2, 64)
    step_in = onerec_step_inputs(model, feats, 2, torch.Generator().manual_seed(0))
    step = capture(OneRecStep(model).eval(), step_in)
    assert step.output_specs[0].shape == ("batch", 16, 256)
    with torch.no_grad():
        torch.testing.assert_close(step.graph_module(*step_in), model.step(step_in[:2], step_in[2]))


def test_onerec_kv_sets_and_moe_layout():
    cfg = dataclasses.replace(ONEREC_CONFIGS["onerec-tiny"], kv_layers=2, n_layers=4)
    model = OneRecModel(cfg)
    assert [model.kv_set(i) for i in range(4)] == [0, 0, 1, 1]
    assert len(model.context.norms) == 4
    tiny = OneRecModel(ONEREC_CONFIGS["onerec-tiny"])
    kinds = [type(layer.ffn).__name__ for layer in tiny.layers]
    assert kinds == ["SwiGLU", "SwiGLU", "MoE", "MoE"]
    moe = tiny.layers[3].ffn
    assert len(moe.experts) == 8 and len(moe.shared_experts) == 1 and moe.top_k == 2


def test_ksa_model_drops_summaries_and_is_causal():
    spec = get_model("ksa-tiny")
    model = spec.build(dtype=torch.float64)
    (tokens,) = spec.example_inputs(2, seq=23, dtype=torch.float64)
    with torch.no_grad():
        logits = model(tokens)
        changed = tokens.clone()
        changed[:, 15:] = (changed[:, 15:] + 1) % model.cfg.vocab
        logits2 = model(changed)
    assert logits.shape == (2, 23, model.cfg.vocab)
    torch.testing.assert_close(logits[:, :15], logits2[:, :15], rtol=0, atol=0)  # the future never leaks back
    assert not torch.allclose(logits[:, 15:], logits2[:, 15:])


def test_ksa_captures_with_a_dynamic_sequence_in_whole_chunks():
    spec = get_model("ksa-tiny")
    model = spec.build(dtype=torch.float64)
    k = model.cfg.chunk
    g = capture(model, spec.example_inputs(2, seq=8 * k), dynamic_shapes=(
        {0: Dim("batch"), 1: k * Dim("chunks", min=2, max=1024)},))
    for seq in (2 * k, 11 * k):
        x = spec.example_inputs(3, seq=seq, seed=seq)
        with torch.no_grad():
            torch.testing.assert_close(g.graph_module(*x), model(*x), rtol=1e-12, atol=1e-12)


def test_dlrm_outputs_probabilities():
    spec = get_model("dlrm-small")
    model = spec.build()
    with torch.no_grad():
        p = model(*spec.example_inputs(16))
    assert p.shape == (16, 1) and ((p > 0) & (p < 1)).all()


def test_ksa_useful_flops_count_one_projection_set_and_allowed_pairs():
    from torch.utils.flop_counter import FlopCounterMode

    from recfx.models.ksa import ksa_flops, text_causal_pairs
    from recfx.models.ksa_mask import interleaved_length, ksa_mask

    spec = get_model("ksa-tiny")
    cfg, model = spec.config, spec.build()
    batch, seq = 2, 37
    (tokens,) = spec.example_inputs(batch, seq=seq)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(tokens)
    counts = counter.get_flop_counts()["Global"]
    length = interleaved_length(seq, cfg.chunk, cfg.summaries)
    n_ksa = sum(cfg.is_ksa_layer(i) for i in range(cfg.n_layers))
    qkv = 2 * length * cfg.d_model * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.d_head
    linear = sum(v for op, v in counts.items() if "mm" in str(op) and "bmm" not in str(op))
    # the reference computes both projection sets in KSA layers: the useful count keeps one
    pairs = n_ksa * int(ksa_mask(length, cfg.chunk, cfg.summaries, cfg.window).sum()) + (
        cfg.n_layers - n_ksa) * text_causal_pairs(seq, cfg.chunk, cfg.summaries)
    attention = 4 * cfg.n_heads * cfg.d_head * pairs
    assert ksa_flops(cfg, batch, seq) == linear - batch * n_ksa * qkv + batch * attention
    assert spec.flops_fn is not None and spec.flops_fn(cfg, (tokens,)) == ksa_flops(cfg, batch, seq)
