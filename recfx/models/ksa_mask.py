"""The KSA layout and visibility rules; they live in :mod:`recfx.ops.ksa_layout` (the executable spec, on the
ground floor, so that kernels, passes and the runtime do not import models). Re-exported here for model code."""

from recfx.ops.ksa_layout import (  # noqa: F401
    allowed_pairs,
    interleaved_length,
    is_summary,
    ksa_mask,
    ksa_visibility,
    positions,
    text_causal_mask,
    text_positions,
)
