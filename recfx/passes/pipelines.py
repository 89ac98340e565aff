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
- ``lower``: a backend's own lowering of recfx ops to what its compiler fuses, e.g. ``SCALED_MM_LOWERING``
  (``cuda-fp8``: FP8 GEMMs as aten quantization + ``torch._scaled_mm`` for Inductor).

    >>> CANONICAL_PASSES[0], FP8_PASSES[-1], DEFAULT_FUSIONS, SCALED_MM_LOWERING
    ('remove_noops', 'fp8_report', ('fuse_ksa',), ('fp8_lower_scaled_mm',))
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

#: The ``lower`` stage of ``cuda-fp8``: FP8 GEMM ops to aten quantization + ``torch._scaled_mm``.
SCALED_MM_LOWERING: tuple[str, ...] = ("fp8_lower_scaled_mm",)
