"""Every default pass list of recfx, in one place: adding a default pass is one edit here (plus its test).

A compile runs ``CANONICAL_PASSES`` (or ``CompileConfig.passes``), then what its backend adds
(``recfx.backends.base.Backend.passes``): ``FP8_PASSES`` for ``*-fp8`` backends (through
:func:`recfx.passes.quant.fp8_pipeline`, which checks the user's options first), the registered
``DEFAULT_FUSIONS``, and the backend's ``lowering`` (one of the lists below). This module holds data only.
Stages, in order (``recfx.passes.base.STAGES``), and what each default list puts in them:

- ``canonicalize``: ``CANONICAL_PASSES``.
- ``quantize``: ``FP8_PASSES``. ``fp8_lower`` belongs here, not to ``lower``: the quantize stage ends with every
  quantized linear as one ``recfx::fp8_linear[_blocks]`` GEMM (its invariant ``fp8_gemm_weights``), the form every
  backend keys off, and ``fp8_report`` then measures that graph against the float model.
- ``fuse``: ``DEFAULT_FUSIONS``.
- ``lower``: a backend's own lowering to what its compiler runs well, as (backend option, pass) pairs: a pass with
  an option runs unless ``backend_options[option]`` is False, one with ``None`` always. ``INDUCTOR_LOWERINGS``
  (GQA attention folded, attention over a few tokens as fused math, MoE experts routed) and ``CUDA_FP8_LOWERINGS``
  (those, FP8 experts routed, FP8 GEMMs as aten quantization + ``torch._scaled_mm``).

    >>> CANONICAL_PASSES[0], FP8_PASSES[-1], DEFAULT_FUSIONS, CUDA_FP8_LOWERINGS[-1]
    ('remove_noops', 'fp8_report', ('fuse_ksa',), (None, 'fp8_lower_scaled_mm'))
"""

from __future__ import annotations

#: Canonicalisation, in order: drop no-ops first so that CSE and the linear rewrite see through them; autocast /
#: grad-mode regions are opened before the linear rewrite so that it (and the FP8 policy) sees their GEMMs.
CANONICAL_PASSES: tuple[str, ...] = ("remove_noops", "dce", "cse", "inline_autocast", "matmul_to_linear",
                                     "constant_folding", "dce_final")

#: The FP8 steps of ``*-fp8`` backends (docs/fp8.md), in order; :func:`recfx.passes.quant.fp8_pipeline` checks the
#: user's options first.
FP8_PASSES: tuple[str, ...] = ("fp8_annotate", "fp8_prepare", "fp8_calibrate", "fp8_evaluate", "fp8_convert",
                               "fp8_lower", "fp8_report")

#: Fusions every backend runs after quantization, when registered (the op they produce has an eager reference).
DEFAULT_FUSIONS: tuple[str, ...] = ("fuse_ksa",)

#: The ``lower`` stage of the Inductor backends: non-causal GQA attention without the K/V copy
#: (``fold_gqa_attention``), attention over at most 8 tokens as math Inductor fuses (``lower_tiny_attention``),
#: MoE layers written for export as routed grouped GEMMs (``route_moe_experts``).
INDUCTOR_LOWERINGS: tuple[tuple[str | None, str], ...] = (("fold_gqa", "fold_gqa_attention"),
                                                           ("tiny_attention", "lower_tiny_attention"),
                                                           ("route_moe", "route_moe_experts"))

#: ``cuda-fp8``: the Inductor lowerings, FP8 experts routed (per-channel: ``aten._scaled_grouped_mm``; block-scaled:
#: ``recfx::fp8_block_mm`` grouped), plain attentions in FP8 where ``backend_options={"fp8_attention": True}`` asks
#: for it (``lower_fp8_attention``; off by default), then FP8 GEMM ops as aten quantization + ``torch._scaled_mm``
#: or ``recfx::fp8_block_mm`` (``fp8_lower_scaled_mm``).
CUDA_FP8_LOWERINGS: tuple[tuple[str | None, str], ...] = (*INDUCTOR_LOWERINGS,
                                                           ("route_moe", "route_moe_experts_fp8"),
                                                           (None, "lower_fp8_attention"),
                                                           (None, "fp8_lower_scaled_mm"))


def lowering_options(lowerings: tuple[tuple[str | None, str], ...]) -> tuple[str, ...]:
    """The backend options that switch lowerings off, in order, once each.

        >>> lowering_options(CUDA_FP8_LOWERINGS)
        ('fold_gqa', 'tiny_attention', 'route_moe')
    """
    return tuple(dict.fromkeys(option for option, _ in lowerings if option is not None))
