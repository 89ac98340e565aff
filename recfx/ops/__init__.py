"""Custom operators (``recfx::`` namespace), each defined once with torch.library plus a fake implementation."""
