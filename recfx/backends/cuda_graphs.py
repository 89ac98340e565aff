"""CUDA graphs per batch bucket: small batches replay a captured graph instead of launching every kernel.

A decode step of a recommender at batch 1-8 is launch-bound: hundreds of small kernels whose launch costs more than
their work. :class:`BatchGraphs` wraps a compiled callable; a call whose inputs are all CUDA tensors and whose batch
(dim 0 of the first input) is one of ``batches`` replays a CUDA graph captured for exactly those input shapes (the
first call at a shape warms up on a side stream and captures). Shapes are never padded: a batch outside the buckets
(or a new shape beyond ``max_graphs``) runs uncaptured, and :meth:`BatchGraphs.summary` says which ran how.

Outputs are copied out of the graph's memory before they are returned, so a caller may keep them across calls.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_map

log = logging.getLogger(__name__)

#: Batch sizes captured by default: where launch overhead matters.
DEFAULT_BATCHES = (1, 2, 4, 8)
#: Warm-up calls before capture (compilation, autotuning, allocator).
WARMUP_CALLS = 2


@dataclasses.dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]
    outputs: Any
    replays: int = 0


@dataclasses.dataclass
class GraphStats:
    """What ran how: ``captured`` shapes with their replays, ``uncaptured`` batch sizes with their call counts."""

    batches: tuple[int, ...]
    captured: dict[str, int] = dataclasses.field(default_factory=dict)
    uncaptured: dict[int, int] = dataclasses.field(default_factory=dict)

    def render(self) -> str:
        lines = [f"CUDA graphs for batches {list(self.batches)} (exact shapes, no padding)"]
        lines += [f"  replayed {n}x: {shape}" for shape, n in self.captured.items()]
        if self.uncaptured:
            lines.append("  ran uncaptured (batch outside the buckets, or not CUDA): "
                         + ", ".join(f"batch {b}: {n} calls" for b, n in sorted(self.uncaptured.items())))
        return "\n".join(lines)


class BatchGraphs:
    """A callable that replays per-shape CUDA graphs of ``fn`` for the batch sizes in ``batches``.

    Args:
        fn: the compiled callable (flat tensor inputs).
        batches: batch sizes to capture.
        max_graphs: at most this many captured shapes (each holds its own memory pool).

    Example:
        >>> runner = BatchGraphs(lambda x: x * 2, batches=(1, 2))
        >>> runner(torch.ones(3)).tolist()   # CPU tensors: never captured
        [2.0, 2.0, 2.0]
        >>> runner.stats.uncaptured
        {3: 1}
    """

    def __init__(self, fn: Callable[..., Any], batches: Sequence[int] = DEFAULT_BATCHES, max_graphs: int = 16) -> None:
        if isinstance(batches, int) or not isinstance(batches, Sequence):
            raise TypeError(f"cuda_graph_batches must be a sequence of batch sizes such as (1, 2, 4, 8), got "
                            f"{batches!r}")
        bad = [b for b in batches if not (isinstance(b, int) and b >= 1)]
        if bad:
            raise ValueError(f"cuda_graph_batches must be positive integers, got {bad}")
        self.fn = fn
        self.batches = tuple(sorted(set(batches)))
        self.max_graphs = max_graphs
        self.graphs: dict[tuple[Any, ...], _Graph] = {}
        self.stats = GraphStats(self.batches)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return self.fn(*inputs)  # the caller captures the whole call (recfx bench --cuda-graphs on)
        key = _key(inputs)
        graph = self.graphs.get(key)
        if graph is None and self._capturable(inputs):
            graph = self._capture(inputs)
        if graph is None:
            batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 0
            self.stats.uncaptured[batch] = self.stats.uncaptured.get(batch, 0) + 1
            return self.fn(*inputs)
        for static, x in zip(graph.inputs, inputs):
            static.copy_(x)
        graph.graph.replay()
        graph.replays += 1
        self.stats.captured[str([list(x.shape) for x in inputs])] = graph.replays
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, graph.outputs)

    def _capturable(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        return (bool(inputs) and all(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs)
                and inputs[0].dim() > 0 and int(inputs[0].shape[0]) in self.batches
                and len(self.graphs) < self.max_graphs)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> _Graph:
        static = tuple(x.clone() for x in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_CALLS):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.fn(*static)
        captured = _Graph(graph, static, outputs)
        self.graphs[_key(inputs)] = captured
        log.info("captured a CUDA graph for input shapes %s", [list(x.shape) for x in inputs])
        return captured


def _key(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """A graph serves one shape, dtype and device per input (a replay copies inputs into its own buffers)."""
    return tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else repr(x) for x in inputs)


__all__ = ["DEFAULT_BATCHES", "BatchGraphs", "GraphStats"]
