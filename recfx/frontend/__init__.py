"""Frontend: capture a PyTorch model into an aten-level FX graph with ``torch.export``."""

from recfx.frontend.capture import CapturedGraph, TensorSpec, capture

__all__ = ["CapturedGraph", "TensorSpec", "capture"]
