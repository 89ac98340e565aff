import pytest
import torch
from torch import nn

from recfx.errors import CaptureError
from recfx.frontend import capture


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([x, y], dim=1)).sum(1)


def test_capture_returns_graph_specs_and_state():
    model = nn.Linear(4, 2).eval()
    g = capture(model, (torch.randn(3, 4),))
    assert g.dynamic_dims == {"input": {0: "batch"}}
    assert str(g.input_specs[0]) == "input: float32[batch, 4]"
    assert str(g.output_specs[0]) == "output_0: float32[batch, 2]"
    assert set(g.parameters) == {"weight", "bias"}
    assert any(n.op == "get_attr" for n in g.graph_module.graph.nodes)
    x = torch.randn(7, 4)
    torch.testing.assert_close(g.graph_module(x), model(x))


def test_named_dynamic_dims_and_shared_batch_symbol():
    g = capture(TwoInputs().eval(), (torch.randn(3, 2, 4), torch.randn(3, 5, 4)), dynamic_dims={"x": {1: "seq"}})
    assert g.dynamic_dims == {"x": {0: "batch", 1: "seq"}, "y": {0: "batch"}}
    out = g.graph_module(torch.randn(2, 6, 4), torch.randn(2, 5, 4))
    assert out.shape == (2, 3)


def test_static_capture_when_batch_not_dynamic():
    g = capture(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), dynamic_batch=False)
    assert g.dynamic_dims == {}
    assert g.input_specs[0].shape == (3, 4)


def test_training_mode_is_rejected():
    with pytest.raises(ValueError, match=r"training mode.*model.eval\(\)"):
        capture(nn.Linear(4, 2), (torch.randn(3, 4),))


@pytest.mark.parametrize("inputs, match", [
    ((torch.randn(3, 4), 2.0), r"#1 is float"),
    ({"x": torch.randn(3, 4)}, "tuple of tensors"),
    ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)), r"do not fit .*Got 3 tensor"),
])
def test_bad_example_inputs_are_user_errors(inputs, match):
    with pytest.raises(TypeError, match=match):
        capture(TwoInputs().eval(), inputs)


def test_dynamic_dim_with_example_size_one_says_what_to_do():
    with pytest.raises(ValueError, match="example size >= 2"):
        capture(nn.Linear(4, 2).eval(), (torch.randn(1, 4),))


def test_unknown_dynamic_dim_input_name():
    with pytest.raises(ValueError, match=r"the inputs are \['x', 'y'\]"):
        capture(TwoInputs().eval(), (torch.randn(3, 2, 4), torch.randn(3, 2, 4)), dynamic_dims={"z": {1: "s"}})


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # branch on a value: not exportable
            return x * 2
        return x


def test_export_failure_names_operation_line_and_fix():
    with pytest.raises(CaptureError) as info:
        capture(DataDependent().eval(), (torch.randn(3, 4),))
    text = str(info.value)
    assert "DataDependent" in text
    assert "test_capture.py" in text and "if x.sum() > 0" in text  # the user's source line
    assert "torch.where" in text or "torch.cond" in text  # what to do


class FixedReshape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(3, -1)  # forces the batch to 3


def test_specialised_dynamic_dim_error_suggests_fix():
    with pytest.raises(CaptureError, match="Mark fewer dims dynamic"):
        capture(FixedReshape().eval(), (torch.randn(3, 4),))


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))).softmax(-1)


@pytest.mark.parametrize("backend", ["eager", "eager-fp8"])
def test_compile_from_four_threads_at_once(backend):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import recfx

    start = threading.Barrier(4)
    quant = recfx.QuantConfig(progress=False, default_exclusions=False) if backend.endswith("fp8") else None

    def job(seed: int) -> float:
        torch.manual_seed(seed)
        model = TwoLayers().eval()
        start.wait()  # all four captures begin together
        fast = recfx.compile(model, (torch.randn(4, 16),), backend=backend, quant=quant)
        x = torch.randn(3, 16)
        with torch.inference_mode():
            return float((fast(x) - model(x)).abs().max())

    with ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(job, range(4)))  # re-raises the first failure (a CaptureError before the lock)
    assert max(errors) <= (1e-6 if backend == "eager" else 0.05)  # softmax outputs in [0, 1]; FP8 E4M3 GEMMs


class _WriteIntoSplitPiece(nn.Module):
    """Valid inference code that autograd refuses under grad mode: in-place writes to pieces of split/chunk/select."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        a, b = torch.split(h, [3, 5], dim=-1)
        a.mul_(2.0)
        c, _ = b.chunk(2, dim=-1)
        c[:, 0] = -1.0
        return h.relu(), a


@pytest.mark.parametrize("backend", ["eager", "ort"])
def test_in_place_write_to_split_piece_captures_without_autograd(backend):
    import recfx

    model = _WriteIntoSplitPiece().eval()
    x = torch.randn(2, 4, 8)
    with pytest.raises(RuntimeError, match="is a view and is being modified inplace"):
        model(x)  # what torch.export ran into under grad mode: autograd's check, not a property of the model
    assert torch.is_grad_enabled()
    compiled = recfx.compile(model, (x,), backend=backend)
    assert torch.is_grad_enabled()  # the caller's grad mode is left as it was
    x5 = torch.randn(5, 4, 8)
    with torch.no_grad():
        want = model(x5)
    got = compiled(x5)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_capture_without_autograd_keeps_the_unfused_attention_graph():
    """nn.MultiheadAttention's fused inference path depends on grad mode; the captured graph must not take it."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    g = capture(layer, (torch.randn(2, 5, 16),))
    targets = {str(n.target) for n in g.graph_module.graph.nodes if n.op == "call_function"}
    assert "aten.scaled_dot_product_attention.default" in targets
    assert not any("native_multi_head_attention" in t or "transformer_encoder_layer" in t for t in targets)
