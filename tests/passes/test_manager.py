import pytest
import torch
from torch import nn

from recfx.errors import PassError
from recfx.passes import CANONICAL_PASSES, PASSES, PassManager, PassResult, Placement, insert_placements
from recfx.passes.base import register_pass


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        return self.drop(torch.relu(x @ self.w.t())) + torch.relu(x @ self.w.t())


@pytest.fixture
def temp_pass():
    """Register passes for one test and unregister them afterwards."""
    names = []

    def add(name, fn, stage="canonicalize", postcondition=None):
        register_pass(name, stage=stage, postcondition=postcondition)(fn)
        names.append(name)

    yield add
    for n in names:
        PASSES.remove(n)


def test_pipeline_records_time_and_node_deltas(graph_of):
    gm = graph_of(Small(), torch.randn(3, 4))
    x = torch.randn(2, 4)
    want = gm(x)
    pm = PassManager.from_names(CANONICAL_PASSES, check_invariants=True)
    out = pm.run(gm)
    assert [r.name for r in pm.records] == list(CANONICAL_PASSES)
    assert all(r.seconds >= 0 for r in pm.records)
    noop = pm.records[0]
    assert noop.modified and noop.delta < 0
    cse = next(r for r in pm.records if r.name == "cse")
    assert cse.changed_nodes >= 2  # the second relu(x @ w.t()) chain
    torch.testing.assert_close(out(x), want)
    assert pm.table()[0]["name"] == CANONICAL_PASSES[0]


def test_failing_pass_error_names_pass_previous_passes_and_node(graph_of, temp_pass):
    def boom(gm):
        node = next(n for n in gm.graph.nodes if n.op == "call_function")
        raise PassError("cannot handle this", node=node.name)

    temp_pass("boom", boom)
    pm = PassManager.from_names(["remove_noops", "dce", "boom"])
    with pytest.raises(PassError) as info:
        pm.run(graph_of(Small(), torch.randn(3, 4)))
    err = info.value
    assert err.pass_name == "boom" and err.previous == ("remove_noops", "dce")
    assert "at node" in str(err) and "passes run before it: remove_noops, dce" in str(err)


def test_invariant_violation_is_caught_after_the_pass(graph_of, temp_pass):
    def add_dead_node(gm):
        x = next(n for n in gm.graph.nodes if n.op == "placeholder")
        with gm.graph.inserting_after(x):
            gm.graph.call_function(torch.ops.aten.relu.default, (x,))
        gm.recompile()
        return PassResult(gm, modified=True)

    temp_pass("leave_dead", add_dead_node)
    pm = PassManager.from_names([*CANONICAL_PASSES, "leave_dead"], check_invariants=True)
    with pytest.raises(PassError, match=r"leave_dead.*dead node: relu"):
        pm.run(graph_of(Small(), torch.randn(3, 4)))
    # with checks off the same pipeline runs
    PassManager.from_names([*CANONICAL_PASSES, "leave_dead"]).run(graph_of(Small(), torch.randn(3, 4)))


def test_postcondition_is_checked(graph_of, temp_pass):
    temp_pass("claims_no_relu", lambda gm: PassResult(gm, False),
              postcondition=lambda gm: [n.name for n in gm.graph.nodes if "relu" in str(n.target)])
    with pytest.raises(PassError, match="postcondition"):
        PassManager.from_names(["claims_no_relu"], check_invariants=True).run(graph_of(Small(), torch.randn(3, 4)))


def test_user_pass_inserted_at_named_point(graph_of, temp_pass):
    seen = []

    def spy(gm):
        seen.append(sum(1 for n in gm.graph.nodes if "dropout" in str(n.target)))
        return PassResult(gm, False)

    temp_pass("spy", spy)
    pipeline = insert_placements([PASSES.get(n) for n in CANONICAL_PASSES], [Placement("spy", after="remove_noops")])
    assert [s.name for s in pipeline][:2] == ["remove_noops", "spy"]
    PassManager(pipeline).run(graph_of(Small(), torch.randn(3, 4)))
    assert seen == [0]  # it ran after dropout was removed
    before = insert_placements([PASSES.get("dce")], [Placement("spy", before="stage:canonicalize")])
    assert [s.name for s in before] == ["spy", "dce"]


def test_unknown_anchor_lists_valid_ones(temp_pass):
    temp_pass("spy2", lambda gm: PassResult(gm, False))
    with pytest.raises(ValueError, match="pipeline passes"):
        insert_placements([PASSES.get("dce")], [Placement("spy2", after="nope")])


def test_pipeline_validation():
    with pytest.raises(ValueError, match="more than once"):
        PassManager.from_names(["dce", "dce"])
    with pytest.raises(ValueError, match="dump_after names passes not in the pipeline"):
        PassManager.from_names(["dce"], dump_after=["cse"])
    with pytest.raises(ValueError, match="unknown stage"):
        register_pass("x", stage="nowhere")


def test_dump_writes_text_and_picture(graph_of, tmp_path):
    pm = PassManager.from_names(["remove_noops", "dce"], dump_after=["capture", "dce"], dump_dir=tmp_path,
                                dump_format="png")
    pm.run(graph_of(Small(), torch.randn(3, 4)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00_capture.png", "00_capture.txt", "02_dce.png", "02_dce.txt"]
    assert "aten.relu" in (tmp_path / "02_dce.txt").read_text() or "relu" in (tmp_path / "02_dce.txt").read_text()
    assert (tmp_path / "02_dce.png").read_bytes()[:4] == b"\x89PNG"


def test_svg_dump(graph_of, tmp_path):
    from recfx.passes.dump import dump_graph

    paths = dump_graph(graph_of(Small(), torch.randn(3, 4)), tmp_path / "g", fmt="svg")
    assert paths[1].suffix == ".svg" and "<svg" in paths[1].read_text()[:500]
