"""What ``recfx serve`` and ``recfx export-triton`` are told: per-model batching and instances, and where to listen."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelServing:
    """How Triton runs each served model.

    Args:
        max_batch: the largest batch one request may carry and the largest one Triton's dynamic batcher forms;
            Triton answers a bigger request with 400. Ignored for a model that cannot be batched (it is served
            with ``max_batch_size: 0``).
        dynamic_batching: let Triton's dynamic batcher concatenate concurrent requests (up to ``max_batch``).
        queue_delay_us: how long (microseconds) the batcher may hold a request to wait for others; 0 batches only
            what is already queued. Needs ``dynamic_batching``.
        instances: model instances (each one runs a request batch at a time; all share one loaded module).
    """

    max_batch: int = 8
    dynamic_batching: bool = True
    queue_delay_us: int = 0
    instances: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue_delay_us must be >= 0, got {self.queue_delay_us}")
        if self.queue_delay_us and not self.dynamic_batching:
            raise ValueError(f"queue_delay_us={self.queue_delay_us} needs dynamic_batching=True (without the dynamic "
                             "batcher no request waits in a queue); drop one of the two")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelServing:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelServing fields {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """Where the server listens: one host for HTTP, gRPC and metrics (loopback by default), three ports.

    Binding another address than loopback exposes the models to the network; pass it explicitly (``0.0.0.0`` for
    every interface) when that is what you want.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(f"host must be an IP address (Triton binds addresses, not names), got {self.host!r}; "
                             "e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not 0 < p < 65536 for p in ports):
            raise ValueError(f"ports must be in 1..65535, got http {self.http_port}, grpc {self.grpc_port}, "
                             f"metrics {self.metrics_port}")
        if len(set(ports)) != 3:
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
