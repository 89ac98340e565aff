"""Serving compiled modules on NVIDIA Triton Inference Server (docs/serving.md).

``serve`` runs Triton in this process through PyTriton (the ``serve`` extra, imported only when a server starts);
``export_triton`` writes a model repository for a stock ``tritonserver``.
"""

from recfx.serving.config import ModelServing, ServerAddress
from recfx.serving.health import free_ports, wait_until_ready
from recfx.serving.server import Server, serve

__all__ = ["ModelServing", "Server", "ServerAddress", "free_ports", "serve", "wait_until_ready"]
