"""Grouped-query attention helper shared by the models, the KSA kernels' references and the passes."""

from __future__ import annotations

import torch


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, T, Hkv, D) -> (B, T, Hkv * groups, D): each kv head serves ``groups`` consecutive query heads."""
    if groups == 1:
        return x
    b, t, h, d = x.shape
    return x[:, :, :, None, :].expand(b, t, h, groups, d).reshape(b, t, h * groups, d)
