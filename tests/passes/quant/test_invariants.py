"""The quantize-stage invariants flag broken graphs (and accept the pipeline's own output)."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from recfx.ops.fp8 import quantize_weight
from recfx.passes.quant import FP8_PASSES
from recfx.passes.quant.invariants import gemm_weights, no_observers, quantize_consumed
from recfx.passes.quant.state import ActivationObserver

ops = torch.ops.recfx


def test_pipeline_output_satisfies_every_invariant(fp8, toy) -> None:  # type: ignore[no-untyped-def]
    gm, _ = fp8.run(*toy, list(FP8_PASSES))
    assert quantize_consumed(gm) == [] and no_observers(gm) == [] and gemm_weights(gm) == []


def test_quantized_tensor_into_a_float_op_is_flagged() -> None:
    def bad(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.add.Tensor(ops.quantize_fp8.default(x, s), 1)

    gm = torch.fx.symbolic_trace(bad)
    assert any("not a dequantize/FP8 op" in p for p in quantize_consumed(gm))

    def good(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        q, scale = ops.quantize_fp8_per_token.default(x)
        return ops.dequantize_fp8.default(q, scale, torch.float32) + scale  # the scale may go anywhere
    assert quantize_consumed(torch.fx.symbolic_trace(good)) == []


def _module(build) -> GraphModule:  # type: ignore[no-untyped-def]
    """A graph module written node by node: build(graph, root) adds nodes and returns the output node."""
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    graph.output(build(graph, root))
    return GraphModule(root, graph)


def _attr(graph, root, name: str, value: torch.Tensor):  # type: ignore[no-untyped-def]
    root.register_buffer(name, value)
    node = graph.get_attr(name)
    node.meta["val"] = value
    return node


def test_left_observer_and_float_weight_gemm_are_flagged() -> None:
    def build(graph, root):  # type: ignore[no-untyped-def]
        x = graph.placeholder("x")
        root.add_module("_fp8_observer_0", ActivationObserver(["lin"]))
        obs = graph.call_module("_fp8_observer_0", (x,))
        w = _attr(graph, root, "w", torch.randn(4, 8))  # a float weight where an FP8 buffer belongs
        s = _attr(graph, root, "w_s", torch.ones(4, 1))
        return graph.call_function(ops.fp8_linear.default, (obs, w, s))

    gm = _module(build)
    assert no_observers(gm) and "observer" in no_observers(gm)[0]
    assert any("not an FP8 get_attr buffer" in p for p in gemm_weights(gm))


def test_unlowered_fake_quant_linear_is_flagged() -> None:
    w_q, w_s = quantize_weight(torch.randn(4, 8))

    def build(graph, root):  # type: ignore[no-untyped-def]
        x = graph.placeholder("x")
        dq = graph.call_function(ops.dequantize_fp8.default,
                                 (_attr(graph, root, "w_q", w_q), _attr(graph, root, "w_s", w_s), torch.float32))
        return graph.call_function(torch.ops.aten.linear.default, (x, dq))

    assert any("was not lowered" in p for p in gemm_weights(_module(build)))
