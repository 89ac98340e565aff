"""Reference models, registered by name: OneRec-V2-like generative recommenders, KSA transformers, DLRM."""

from __future__ import annotations

from recfx.models.dlrm import DLRM, DLRMConfig, dlrm_inputs
from recfx.models.ksa import KSAConfig, KSAModel, ksa_flops, ksa_inputs
from recfx.models.onerec import (
    OneRecConfig,
    OneRecContext,
    OneRecModel,
    OneRecStep,
    onerec_inputs,
)
from recfx.models.registry import MODELS, ModelSpec, get_model, register_model

ONEREC_CONFIGS = {
    "onerec-tiny": OneRecConfig(
        d_model=256, n_heads=4, d_head=64, kv_groups=2, kv_layers=1, kv_sets=2, n_layers=4, n_moe_layers=2,
        d_ff=1024, n_experts=8, n_shared_experts=1, top_k=2, d_expert=256, pathway_tokens=(8, 64, 128),
        pathway_dim=64, vocab=256, beam=16),
    "onerec-1b": OneRecConfig(
        d_model=2048, n_heads=16, d_head=128, kv_groups=4, kv_layers=1, kv_sets=2, n_layers=16, n_moe_layers=0,
        d_ff=5632, pathway_tokens=(8, 992, 2000), pathway_dim=256, vocab=8192, beam=512),
    "onerec-moe": OneRecConfig(
        d_model=1536, n_heads=12, d_head=128, kv_groups=4, kv_layers=1, kv_sets=2, n_layers=18, n_moe_layers=12,
        d_ff=4096, n_experts=53, n_shared_experts=1, top_k=3, d_expert=1152, pathway_tokens=(8, 992, 2000),
        pathway_dim=256, vocab=8192, beam=512),
}

KSA_CONFIGS = {
    "ksa-tiny": KSAConfig(vocab=512, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_head=32, d_ff=256,
                          chunk=4, summaries=1, window=2),
    "ksa-1b": KSAConfig(vocab=32000, d_model=2048, n_layers=24, n_heads=16, n_kv_heads=16, d_head=128, d_ff=6144,
                        chunk=8, summaries=1, window=128),
}

for _name, _ocfg in ONEREC_CONFIGS.items():
    register_model(ModelSpec(_name, "onerec", _ocfg, OneRecModel, onerec_inputs,
                             description=f"OneRec-V2-like generative recommender, one request = context + "
                                         f"{_ocfg.levels} beam steps (beam {_ocfg.beam})"))
for _name, _kcfg in KSA_CONFIGS.items():
    register_model(ModelSpec(_name, "ksa", _kcfg, KSAModel, ksa_inputs,
                             description=f"KSA transformer, k={_kcfg.chunk} S={_kcfg.summaries} W={_kcfg.window}, "
                                         f"{_kcfg.n_layers} layers (3:1 hybrid)",
                             flops_fn=lambda cfg, inputs: ksa_flops(cfg, *inputs[0].shape)))
register_model(ModelSpec("dlrm-small", "dlrm", DLRMConfig(), DLRM, dlrm_inputs,
                         description="DLRM-style CTR model: 8 tables x 16, dot interaction"))

__all__ = [
    "DLRM", "DLRMConfig", "KSAConfig", "KSAModel", "KSA_CONFIGS", "MODELS", "ModelSpec", "ONEREC_CONFIGS",
    "OneRecConfig", "OneRecContext", "OneRecModel", "OneRecStep", "dlrm_inputs", "get_model", "ksa_inputs",
    "onerec_inputs", "register_model",
]
