"""``ort`` / ``ort-fp8``: ONNX Runtime backends (export cached on disk, I/O binding, dynamic batch, FP8 passes)."""

from __future__ import annotations

import pytest
import torch

import recfx
from recfx.analysis.numerics import cosine
from recfx.backends import BACKENDS, resolve_backend


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.up(x)))


class Ksa(torch.nn.Module):
    """A projection around recfx::ksa_attention: ORT must run the op through its standard-op decomposition."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.proj(x).unflatten(-1, (3, 2, 8)).unbind(2)  # 3 x (B, L, 2, 8)
        return torch.ops.recfx.ksa_attention(q, k, v, 4, 1, 1, 8 ** -0.5)[0].flatten(2)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RECFX_CACHE_DIR", str(tmp_path))


def test_registered() -> None:
    ort, ort_fp8 = BACKENDS.get("ort"), BACKENDS.get("ort-fp8")
    assert not ort.fp8 and ort_fp8.fp8 and issubclass(ort_fp8, ort)
    assert resolve_backend("ort")[0].availability().ok


def test_ort_matches_eager_at_every_batch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = Mlp().eval()
    fast = recfx.compile(model, (torch.randn(4, 32),), backend="ort")
    assert fast.report.backend == "ort" and fast.report.numerics[0].cosine > 0.999999
    assert fast._runner.path.parent == tmp_path / "onnx"
    for batch in (1, 3, 8):
        x = torch.randn(batch, 32)
        with torch.inference_mode():
            assert (fast(x) - model(x)).abs().max() <= 1e-5


def test_exported_file_is_cached_by_graph(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from recfx.onnx import export

    model, inputs = Mlp().eval(), (torch.randn(4, 32),)
    first = recfx.compile(model, inputs, backend="ort")

    def no_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the cached ONNX file should have been reused")

    monkeypatch.setattr(export, "onnx_model", no_export)
    second = recfx.compile(model, inputs, backend="ort")
    assert second._runner.path == first._runner.path
    with torch.no_grad():
        model.down.weight.add_(1.0)  # other weights: another file
    with pytest.raises(AssertionError, match="should have been reused"):
        recfx.compile(model, inputs, backend="ort")


class ScalarBuffer(torch.nn.Module):
    """A 0-dim buffer in the graph (``log1p(counts.max())`` folds to one): the export cache key must hash it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_zero_dim_constant_is_hashed() -> None:
    x = torch.randn(4, 8)
    fast = recfx.compile(ScalarBuffer().eval(), (x,), backend="ort")
    assert torch.allclose(fast(x), x * 3.0)


def test_ort_fp8_runs_the_fp8_passes() -> None:
    torch.manual_seed(0)
    model, inputs = Mlp().eval(), (torch.randn(4, 32),)
    quant = recfx.QuantConfig(progress=False, default_exclusions=False)
    fast = recfx.compile(model, inputs, backend="ort-fp8", quant=quant)
    ops = {str(n.target) for n in fast.graph_module.graph.nodes}
    assert "recfx.fp8_linear.default" in ops
    import onnx

    hist = {n.op_type for n in onnx.load(str(fast._runner.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= hist
    ref = recfx.compile(model, inputs, backend="eager-fp8", quant=quant)
    x = torch.randn(6, 32)
    with torch.inference_mode():
        assert cosine(fast(x).double(), ref(x).double()) >= 0.9999
        assert cosine(fast(x).double(), model(x).double()) >= 0.99


def test_ksa_op_runs_decomposed() -> None:
    torch.manual_seed(0)
    model = Ksa().eval()
    fast = recfx.compile(model, (torch.randn(2, 10, 16),), backend="ort")
    x = torch.randn(3, 10, 16)
    with torch.inference_mode():
        assert (fast(x) - model(x)).abs().max() <= 1e-5


def test_bad_backend_options() -> None:
    inputs = (torch.randn(4, 32),)
    with pytest.raises(ValueError, match="unknown ort backend_options"):
        recfx.compile(Mlp().eval(), inputs, backend="ort", config=recfx.CompileConfig(backend_options={"x": 1}))
    with pytest.raises(ValueError, match="provider must be"):
        recfx.compile(Mlp().eval(), inputs, backend="ort", config=recfx.CompileConfig(
            backend_options={"provider": "tpu"}))


class Scaled(torch.nn.Module):
    """A 0-d buffer (a learned temperature): its bytes go into the cache key like any other constant."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(32, 16)
        self.register_buffer("s", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.s


def test_zero_dim_constant_runs_and_keys_the_cache() -> None:
    torch.manual_seed(0)
    model, inputs = Scaled().eval(), (torch.randn(4, 32),)
    fast = recfx.compile(model, inputs, backend="ort")
    x = torch.randn(3, 32)
    with torch.inference_mode():
        assert (fast(x) - model(x)).abs().max() <= 1e-5
    model.s.fill_(3.0)  # only the 0-d constant changed: another file
    other = recfx.compile(model, inputs, backend="ort")
    assert other._runner.path != fast._runner.path
    with torch.inference_mode():
        assert (other(x) - model(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("weight, activation", [("per_tensor", "dynamic_per_token"),
                                                ("per_channel", "static_per_tensor"),
                                                ("per_tensor", "static_per_tensor")])
def test_ort_fp8_with_per_tensor_scales(weight: str, activation: str) -> None:
    torch.manual_seed(0)
    model, inputs = Scaled().eval(), (torch.randn(8, 32),)
    quant = recfx.QuantConfig(weight=weight, activation=activation, progress=False, default_exclusions=False)
    calibration = [(torch.randn(8, 32),) for _ in range(2)] if activation == "static_per_tensor" else None
    fast = recfx.compile(model, inputs, backend="ort-fp8", quant=quant, calibration=calibration)
    x = torch.randn(5, 32)
    with torch.inference_mode():
        assert cosine(fast(x).double(), model(x).double()) >= 0.99  # FP8 E4M3 on a 32-wide GEMM


class InputAsOutput(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.relu(), x


class SameOutputTwice(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x.relu()
        return y, y


class OutputsMergedByCse(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x.relu() * 2, x.relu() * 2, x  # one tensor after CSE, and the input itself


@pytest.mark.parametrize("model", [InputAsOutput(), SameOutputTwice(), OutputsMergedByCse()],
                         ids=lambda m: type(m).__name__)
def test_outputs_aliasing_inputs_or_each_other(model: torch.nn.Module) -> None:
    fast = recfx.compile(model.eval(), (torch.randn(4, 8),), backend="ort")
    x = torch.randn(3, 8)
    with torch.inference_mode():
        got, want = fast(x), model(x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_cached_file_is_run_only_when_its_content_is_the_graph(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recfx.onnx.session import clear_sessions

    torch.manual_seed(0)
    model, other, inputs = Mlp().eval(), Mlp().eval(), (torch.randn(4, 32),)
    path = recfx.compile(model, inputs, backend="ort")._runner.path
    path.write_bytes(recfx.compile(other, inputs, backend="ort")._runner.path.read_bytes())  # same I/O, other weights
    clear_sessions()  # as in a new process
    again = recfx.compile(model, inputs, backend="ort")
    assert again._runner.path == path
    x = torch.randn(3, 32)
    with torch.inference_mode():
        assert (again(x) - model(x)).abs().max() <= 1e-5  # exported again, not the swapped file
    path.with_name(path.name + ".sha256").unlink()  # a file without its manifest is not trusted either
    clear_sessions()
    with torch.inference_mode():
        assert (recfx.compile(model, inputs, backend="ort")(x) - model(x)).abs().max() <= 1e-5


def test_file_refused_by_onnx_runtime_is_not_kept(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from recfx.onnx import export

    real = export.onnx_model

    def misnamed(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real(*args, **kwargs)
        model.graph.outputs[0].name = "not_the_spec_name"
        return model

    monkeypatch.setattr(export, "onnx_model", misnamed)
    with pytest.raises(ValueError, match="not_the_spec_name"):
        recfx.compile(Mlp().eval(), (torch.randn(4, 32),), backend="ort")
    assert not list((tmp_path / "onnx").iterdir())  # nothing left for the next compile to reuse
    monkeypatch.setattr(export, "onnx_model", real)
    assert recfx.compile(Mlp().eval(), (torch.randn(4, 32),), backend="ort").report.backend == "ort"
