"""``PassManager``: runs an ordered pipeline, times it, checks invariants, dumps graphs on request."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from torch.fx import GraphModule

from recfx.config import ConfigBase
from recfx.errors import PassError
from recfx.passes.base import PASSES, STAGES, GraphPass, PassContext, PassResult, PassSpec
from recfx.passes.invariants import check_all

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """One pass's line in the compile report."""

    name: str
    stage: str
    modified: bool
    seconds: float
    nodes_before: int
    nodes_after: int
    changed_nodes: int
    detail: str = ""

    @property
    def delta(self) -> int:
        return self.nodes_after - self.nodes_before


@dataclasses.dataclass(frozen=True)
class Placement(ConfigBase):
    """Where a user pass goes in the pipeline: ``after`` or ``before`` a named pass or ``stage:<name>`` boundary."""

    name: str
    after: str | None = None
    before: str | None = None

    def validate(self) -> None:
        if (self.after is None) == (self.before is None):
            raise ValueError(f"placement of pass {self.name!r} needs exactly one of after= or before=")


class PassManager:
    """Runs passes in order over a graph module.

    Args:
        specs: the pipeline, in order.
        ctx: handed to configurable passes when they are built.
        check_invariants: lint + stage invariants + pass postconditions after every pass.
        dump_after: pass names (or ``"all"``) after which the graph is written to ``dump_dir`` as text and a picture.
        dump_dir: where dumps go.
        dump_format: ``"png"`` or ``"svg"`` for the picture; ``None`` writes text only.
    """

    def __init__(
        self,
        specs: Sequence[PassSpec],
        ctx: PassContext | None = None,
        *,
        check_invariants: bool = False,
        dump_after: Iterable[str] = (),
        dump_dir: str | Path = "recfx_dumps",
        dump_format: str | None = "png",
    ) -> None:
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pipeline lists passes more than once: {dup}")
        order = [STAGES.index(s.stage) for s in specs]
        if order != sorted(order):
            raise ValueError(f"pipeline stages out of order: {[(s.name, s.stage) for s in specs]}; order is {STAGES}")
        self.specs = list(specs)
        self.ctx = ctx or PassContext()
        self.check_invariants = check_invariants
        self.dump_after = set(dump_after)
        unknown = self.dump_after - set(names) - {"all", "capture"}
        if unknown:
            raise ValueError(f"dump_after names passes not in the pipeline: {sorted(unknown)}; pipeline: {names}")
        self.dump_dir = Path(dump_dir)
        self.dump_format = dump_format
        self.records: list[PassRecord] = []

    @classmethod
    def from_names(cls, names: Sequence[str], ctx: PassContext | None = None, **kwargs: object) -> PassManager:
        return cls([PASSES.get(n) for n in names], ctx, **kwargs)  # type: ignore[arg-type]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def run(self, gm: GraphModule) -> GraphModule:
        """Run every pass; returns the final graph module. Records go to ``self.records``."""
        self.records = []
        if "capture" in self.dump_after or "all" in self.dump_after:
            self._dump(gm, 0, "capture")
        built = [(spec, spec.instantiate(self.ctx)) for spec in self.specs]
        for i, (spec, fn) in enumerate(built):
            gm = self._run_one(i, spec, fn, gm)
        return gm

    def _run_one(self, i: int, spec: PassSpec, fn: GraphPass, gm: GraphModule) -> GraphModule:
        before = len(gm.graph.nodes)
        previous = tuple(self.names[:i])
        t0 = time.perf_counter()
        try:
            result = fn(gm)
        except PassError as err:
            raise self._error(spec, previous, str(err), err.node) from err
        except Exception as err:  # any failure inside a pass is reported with the pass and its predecessors
            raise self._error(spec, previous, f"{type(err).__name__}: {err}", getattr(err, "node", "")) from err
        seconds = time.perf_counter() - t0
        if not isinstance(result, PassResult):
            raise self._error(spec, previous, f"returned {type(result).__name__}, expected PassResult")
        gm = result.graph_module
        record = PassRecord(spec.name, spec.stage, result.modified, seconds, before, len(gm.graph.nodes),
                            result.changed_nodes, result.detail)
        self.records.append(record)
        log.info("pass %s: %s, %d -> %d nodes (%d changed) in %.1f ms", spec.name,
                 "modified" if result.modified else "unchanged", before, record.nodes_after,
                 result.changed_nodes, seconds * 1e3)
        if self.check_invariants:
            self._check(i, spec, gm, previous)
        if spec.name in self.dump_after or "all" in self.dump_after:
            self._dump(gm, i + 1, spec.name)
        return gm

    def _check(self, i: int, spec: PassSpec, gm: GraphModule, previous: tuple[str, ...]) -> None:
        cur = STAGES.index(spec.stage)
        stage_done = i + 1 == len(self.specs) or self.specs[i + 1].stage != spec.stage
        completed = list(STAGES[: cur + 1 if stage_done else cur])
        problems = check_all(gm, completed)
        if spec.postcondition is not None:
            problems += [f"[postcondition] {p}" for p in spec.postcondition(gm)]
        if problems:
            node = problems[0]
            raise self._error(spec, previous, "invariant violated after the pass:\n  " + "\n  ".join(problems), node)

    @staticmethod
    def _error(spec: PassSpec, previous: tuple[str, ...], message: str, node: object = "") -> PassError:
        before = ", ".join(previous) if previous else "none"
        where = f" at node {node}" if node else ""
        text = f"pass {spec.name!r} (stage {spec.stage}) failed{where}: {message}\n  passes run before it: {before}"
        return PassError(text, pass_name=spec.name, previous=previous, node=str(node))

    def _dump(self, gm: GraphModule, index: int, name: str) -> None:
        from recfx.passes.dump import dump_graph

        paths = dump_graph(gm, self.dump_dir / f"{index:02d}_{name}", fmt=self.dump_format)
        log.info("dumped graph after %s to %s", name, ", ".join(map(str, paths)))

    def table(self) -> list[dict[str, object]]:
        """The records as rows (for reports and JSON)."""
        return [dataclasses.asdict(r) for r in self.records]


def insert_placements(pipeline: list[PassSpec], placements: Sequence[Placement]) -> list[PassSpec]:
    """Insert user passes at named points: a pass name or ``stage:<stage>`` (the end of that stage's passes).

    Raises ``ValueError`` naming the valid anchors when an anchor is unknown.
    """
    out = list(pipeline)
    for pl in placements:
        spec = PASSES.get(pl.name)
        anchor = pl.after if pl.after is not None else pl.before
        assert anchor is not None
        idx = _anchor_index(out, anchor, after=pl.after is not None)
        moved = dataclasses.replace(spec, stage=_stage_at(out, idx, spec.stage))
        out.insert(idx, moved)
    return out


def _anchor_index(pipeline: list[PassSpec], anchor: str, *, after: bool) -> int:
    names = [s.name for s in pipeline]
    if anchor.startswith("stage:"):
        stage = anchor.removeprefix("stage:")
        if stage not in STAGES:
            raise ValueError(f"unknown stage anchor {anchor!r}; stages: {', '.join('stage:' + s for s in STAGES)}")
        idxs = [i for i, s in enumerate(pipeline) if s.stage == stage]
        if not idxs:
            later = [i for i, s in enumerate(pipeline) if STAGES.index(s.stage) > STAGES.index(stage)]
            return later[0] if later else len(pipeline)
        return idxs[-1] + 1 if after else idxs[0]
    if anchor not in names:
        raise ValueError(f"unknown anchor {anchor!r}; pipeline passes: {names}, or stage:<{'|'.join(STAGES)}>")
    i = names.index(anchor)
    return i + 1 if after else i


def _stage_at(pipeline: list[PassSpec], idx: int, default: str) -> str:
    """A user pass inherits the stage of its neighbour so that stage order stays monotone."""
    if idx > 0:
        return pipeline[idx - 1].stage
    if pipeline:
        return pipeline[0].stage
    return default
