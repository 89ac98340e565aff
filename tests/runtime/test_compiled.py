import dataclasses

import pytest
import torch
from torch import nn

import recfx
from recfx.runtime import compare_outputs, cosine


class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x, ids):
        return self.lin(x).sum(-1) + ids.float(), ids * 2


@pytest.fixture(scope="module")
def compiled():
    model = Two().eval()
    return recfx.compile(model, (torch.randn(3, 4), torch.arange(3)), backend="eager")


def test_report_lists_passes_timings_nodes_and_numerics(compiled):
    rep = compiled.report
    assert [r.name for r in rep.passes][:3] == ["remove_noops", "dce", "cse"]
    assert rep.nodes_captured >= rep.nodes_final > 0
    assert rep.total_seconds > 0 and rep.backend == "eager" and "requested 'eager'" in rep.backend_reason
    assert rep.numerics[0].cosine == pytest.approx(1.0) and rep.numerics[1].exact == 1.0
    text = str(rep)
    for word in ("remove_noops", "matmul_to_linear", "captured", "cosine", "x: float32[batch, 4]"):
        assert word in text
    assert rep.to_dict()["backend"] == "eager"


@pytest.mark.parametrize("args, exc, match", [
    ((torch.randn(3, 4),), TypeError, "expected 2 tensor inputs"),
    ((torch.randn(3, 4), [1, 2, 3]), TypeError, "'ids' must be a tensor"),
    ((torch.randn(3, 4, dtype=torch.float64), torch.arange(3)), TypeError, "'x' must be torch.float32"),
    ((torch.randn(3, 5), torch.arange(3)), ValueError, r"dim 1 must be 4 .*dynamic_dims"),
    ((torch.randn(3), torch.arange(3)), ValueError, "must have 2 dims"),
    ((torch.randn(3, 4, device="meta"), torch.arange(3)), ValueError, "'x' is a meta tensor .* on cpu"),
])
def test_bad_call_inputs_get_clear_errors(compiled, args, exc, match):
    with pytest.raises(exc, match=match):
        compiled(*args)


def test_inputs_on_another_device_than_compiled_for(compiled):
    import dataclasses

    assert all(s.device == torch.device("cpu") for s in compiled.input_specs)
    on_gpu = compiled.input_specs[1]
    compiled.input_specs[1] = dataclasses.replace(on_gpu, device=torch.device("cuda", 0))  # as if compiled on a GPU
    try:
        with pytest.raises(ValueError, match=r"'ids' is on cpu, but .* compiled for cuda:0 .*\.to\('cuda:0'\)"):
            compiled(torch.randn(3, 4), torch.arange(3))
    finally:
        compiled.input_specs[1] = on_gpu


def test_dynamic_batch_runs(compiled):
    out, ids = compiled(torch.randn(5, 4), torch.arange(5))
    assert out.shape == (5,) and torch.equal(ids, torch.arange(5) * 2)


def test_compare_outputs_and_cosine():
    a = torch.randn(100, dtype=torch.float64)
    checks = compare_outputs((a, torch.arange(4)), (a + 1e-3, torch.tensor([0, 1, 2, 4])))
    assert checks[0].max_abs_err == pytest.approx(1e-3)
    assert checks[1].exact == 0.75
    assert cosine(torch.zeros(3), torch.zeros(3)) == 1.0 and cosine(torch.zeros(3), torch.ones(3)) == 0.0
    assert cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="1 output tensors"):
        compare_outputs(torch.zeros(2), (torch.zeros(2), torch.zeros(2)))


def test_compile_dumps_graphs_on_request(tmp_path):
    cfg = recfx.CompileConfig(dump_after=("capture", "dce_final"), dump_dir=str(tmp_path), dump_format=None)
    recfx.compile(Two().eval(), (torch.randn(3, 4), torch.arange(3)), backend="eager", config=cfg)
    last = f"{recfx.passes.CANONICAL_PASSES.index('dce_final') + 1:02d}_dce_final.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_capture.txt", last]


def test_user_pass_runs_inside_compile():
    from recfx.passes import PASSES, PassResult, Placement, register_pass

    calls = []

    @register_pass("test_counting_pass", stage="canonicalize")
    def counting(gm):
        calls.append(len(gm.graph.nodes))
        return PassResult(gm, modified=False)

    try:
        cfg = recfx.CompileConfig(user_passes=(Placement("test_counting_pass", after="cse"),))
        c = recfx.compile(Two().eval(), (torch.randn(3, 4), torch.arange(3)), backend="eager", config=cfg)
    finally:
        PASSES.remove("test_counting_pass")
    assert len(calls) == 1
    assert [r.name for r in c.report.passes].index("test_counting_pass") == 3


def test_compiled_module_is_inference_only_and_not_recompiled(compiled):
    assert not compiled.training
    assert compiled.eval() is compiled
    with pytest.raises(RuntimeError, match="inference-only"):
        compiled.train()
    with pytest.raises(TypeError, match="already a recfx CompiledModule.*original"):
        recfx.compile(compiled, (torch.randn(3, 4), torch.arange(3)), backend="eager")


class Flatten(nn.Module):
    def forward(self, x):
        return x.contiguous().view(x.shape[0], -1)  # no node in the graph for a contiguous example


@pytest.mark.parametrize("backend", ["eager", "ort"])
def test_non_contiguous_input_after_a_contiguous_example(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("RECFX_CACHE_DIR", str(tmp_path))
    fast = recfx.compile(Flatten().eval(), (torch.randn(2, 4, 5),), backend=backend)
    x = torch.randn(3, 5, 4).transpose(1, 2)  # (3, 4, 5), not contiguous
    assert torch.equal(fast(x), x.reshape(3, -1))


def test_warm_up_calls_each_batch_from_example_rows(compiled, monkeypatch):
    seen = []
    runner = compiled._runner
    monkeypatch.setattr(compiled, "_runner", lambda *a: seen.append(tuple(x.tolist() for x in a[1:])) or runner(*a))
    seconds = compiled.warm_up(batches=(1, 5))
    assert list(seconds) == [1, 5] and all(s >= 0 for s in seconds.values())
    assert seen == [([0],), ([0, 1, 2, 0, 1],)]  # rows of the example ids (0, 1, 2), repeated past the batch of 3
    compiled.warm_up(batches=range(2, 3), inputs=(torch.randn(4, 4), torch.tensor([7, 8, 9, 10])))
    assert seen[-1] == ([7, 8],)


def test_warm_up_compiles_the_batch_of_one_ahead(monkeypatch):
    """torch specialises a batch of 1: without a warm-up the first batch-1 call compiles a second graph."""
    from torch._dynamo.utils import counters

    monkeypatch.delenv("RECFX_COMPILE_CACHE", raising=False)  # compiled here, not served from a cache as a bundle

    def graphs(fast, batch):
        before = counters["stats"]["unique_graphs"]
        fast(torch.randn(batch, 4))
        return counters["stats"]["unique_graphs"] - before

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    cold = recfx.compile(model, (torch.randn(3, 4),), backend="inductor")
    assert graphs(cold, 1) == 1  # the recompile a first request of 1 would pay
    warm = recfx.compile(model, (torch.randn(3, 4),), backend="inductor")
    warm.warm_up(batches=(1, 2))
    assert graphs(warm, 1) == 0 and graphs(warm, 2) == 0


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batches": (0,)}, ValueError, "integers >= 1"),
    ({"batches": (True,)}, ValueError, "integers >= 1"),
    ({"batches": 4}, TypeError, "a sequence of batch sizes"),
    ({"batches": (b for b in (1, 2))}, TypeError, "a sequence of batch sizes"),  # would be used up by the check
    ({"inputs": torch.randn(2, 4)}, TypeError, "a tuple of tensors"),
    ({"inputs": (torch.randn(2, 4), torch.arange(3))}, ValueError, r"share one batch size .* \[2, 3\]"),
])
def test_warm_up_rejects_bad_arguments(compiled, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        compiled.warm_up(**kwargs)


@pytest.mark.parametrize("config, example, match", [
    ({"dynamic_dims": {"input": {1: "seq"}}}, (3, 5, 4), r"other dynamic dims \(input dim 1 \('seq'\)\)"),
    ({"dynamic_batch": False}, (3, 4), r"one dynamic dim 0 .* dynamic dims: none"),
    ({"dynamic_batch": False, "dynamic_dims": {"input": {1: "seq"}}}, (3, 5, 4), r"dynamic dims: input dim 1"),
])
def test_warm_up_says_what_it_cannot_make_up(config, example, match):
    fast = recfx.compile(nn.Linear(4, 2).eval(), (torch.randn(*example),), backend="eager",
                         config=recfx.CompileConfig(**config))
    with pytest.raises(ValueError, match=match):
        fast.warm_up()


def test_warm_up_of_a_named_batch_a_derived_dim_a_scalar_and_a_bundle():
    class Jagged(nn.Module):
        def forward(self, x, offsets, k):
            return x.sum(-1) * k + offsets[:-1].float().sum()

    jag = recfx.compile(Jagged().eval(), (torch.randn(3, 4), torch.arange(4), torch.tensor(2.0)), backend="eager",
                        config=recfx.CompileConfig(dynamic_dims={"offsets": {0: "batch+1"}}))
    with pytest.raises(ValueError, match=r"other dynamic dims \(offsets dim 0 \('batch \+ 1'\)|batch\+1"):
        jag.warm_up()
    named = recfx.compile(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backend="eager",
                          config=recfx.CompileConfig(dynamic_batch=False, dynamic_dims={"input": {0: "B"}}))
    assert list(named.warm_up(batches=(1, 2))) == [1, 2]
    loaded = recfx.compile(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backend="eager")
    loaded.example_inputs = None  # as a module loaded from a bundle
    with pytest.raises(ValueError, match=r"no example inputs .* pass inputs="):
        loaded.warm_up()
    assert list(loaded.warm_up(batches=(1,), inputs=(torch.randn(2, 4),))) == [1]


def test_a_failing_warm_up_call_names_its_batch():
    fast = recfx.compile(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backend="eager")
    fast._runner = lambda x: (_ for _ in ()).throw(IndexError("index out of range")) if x.shape[0] == 1 else x
    with pytest.raises(IndexError) as info:
        fast.warm_up(batches=(2, 1))
    assert "the call at batch 1, on rows of the example inputs" in " ".join(info.value.__notes__)


def test_serve_warms_up_what_it_can():
    from recfx.serving.config import ModelServing
    from recfx.serving.server import ServedModel
    from recfx.tools.serve import warm_up_line

    serving = ModelServing(max_batch=3)
    fast = recfx.compile(nn.Linear(4, 2).eval(), (torch.randn(3, 4),), backend="eager")
    assert warm_up_line(ServedModel("lin", fast, serving)).startswith("model lin: warmed up at batches 1-3 in ")
    unbatched = ServedModel("lin", fast, ModelServing(max_batch=3, dynamic_batching=False))
    unbatched.signature = dataclasses.replace(unbatched.signature, batched=False)
    assert "served unbatched" in warm_up_line(unbatched)
    fast._runner = lambda x: (_ for _ in ()).throw(IndexError("index out of range"))
    assert warm_up_line(ServedModel("lin", fast, serving)).startswith(
        "model lin: not warmed up: IndexError: index out of range (recfx warm_up: the call at batch 1")
    fast.example_inputs = None
    assert "loaded from a bundle" in warm_up_line(ServedModel("lin", fast, serving))
