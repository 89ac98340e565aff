"""``CompileReport``: what ``recfx.compile`` did (passes, timings, node counts, backend, numerical check)."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from recfx.analysis.numerics import OutputCheck
from recfx.passes.manager import PassRecord


@dataclasses.dataclass
class CompileReport:
    """Attached to every :class:`~recfx.runtime.CompiledModule` as ``.report``; ``print(report)`` shows a table."""

    model: str
    backend: str
    backend_reason: str
    passes: list[PassRecord] = dataclasses.field(default_factory=list)
    nodes_captured: int = 0
    nodes_final: int = 0
    capture_seconds: float = 0.0
    passes_seconds: float = 0.0
    backend_seconds: float = 0.0
    numerics: list[OutputCheck] = dataclasses.field(default_factory=list)
    inputs: list[str] = dataclasses.field(default_factory=list)
    outputs: list[str] = dataclasses.field(default_factory=list)
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return self.capture_seconds + self.passes_seconds + self.backend_seconds

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["total_seconds"] = self.total_seconds
        out["sections"] = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.sections.items()}
        return out

    def render(self, width: int = 110) -> str:
        """The report as text (rich tables), as ``print(report)`` shows it."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=False, color_system=None)
        console.print(f"[bold]recfx compile report[/bold]: {self.model} on backend [bold]{self.backend}[/bold] "
                      f"({self.backend_reason})")
        for line in self.inputs + self.outputs:
            console.print(f"  {escape(line)}")
        table = Table(title="passes", title_justify="left")
        for col in ("pass", "stage", "changed", "nodes before", "nodes after", "ms"):
            table.add_column(col, justify="right" if col not in ("pass", "stage") else "left")
        for r in self.passes:
            table.add_row(r.name, r.stage, str(r.changed_nodes) if r.modified else "-", str(r.nodes_before),
                          str(r.nodes_after), f"{r.seconds * 1e3:.1f}")
        console.print(table)
        console.print(f"nodes: {self.nodes_captured} captured -> {self.nodes_final} final; time: capture "
                      f"{self.capture_seconds:.2f} s, passes {self.passes_seconds:.2f} s, backend "
                      f"{self.backend_seconds:.2f} s, total {self.total_seconds:.2f} s")
        if self.numerics:
            num = Table(title="numerical check vs the original model on the example inputs", title_justify="left")
            for col in ("output", "dtype", "shape", "max |err|", "cosine", "equal"):
                num.add_column(col)
            for c in self.numerics:
                num.add_row(c.name, c.dtype, str(list(c.shape)),
                            "" if c.max_abs_err is None else f"{c.max_abs_err:.3g}",
                            "" if c.cosine is None else f"{c.cosine:.6f}",
                            "" if c.exact is None else f"{c.exact * 100:.2f}%")
            console.print(num)
        for name, section in self.sections.items():
            text = section.render() if hasattr(section, "render") else str(section)
            console.print(f"[bold]{escape(name)}[/bold]")
            console.print(escape(text))
        return buf.getvalue()

    def __str__(self) -> str:
        return self.render()
