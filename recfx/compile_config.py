"""``CompileConfig``: everything ``recfx.compile`` can be told, in one frozen, validated object."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from recfx.config import ConfigBase
from recfx.passes.manager import Placement


def debug_enabled() -> bool:
    """``RECFX_DEBUG=1`` turns on invariant checks after every pass (tests always do)."""
    return os.environ.get("RECFX_DEBUG", "") not in ("", "0", "false", "False")


@dataclasses.dataclass(frozen=True)
class CompileConfig(ConfigBase):
    """Options of :func:`recfx.compile`.

    Attributes:
        dynamic_batch: dim 0 of every input is dynamic.
        dynamic_dims: more dynamic dims by input name: ``{"tokens": {1: "seq"}}``; derived dims as
            ``{"lengths": {0: "8*batch"}}`` or torch.export ``Dim`` expressions.
        passes: the canonicalisation pipeline by pass name (``None``: the default ``CANONICAL_PASSES``).
        user_passes: registered passes to insert at named points (:class:`~recfx.passes.Placement`).
        check_invariants: lint + stage invariants after every pass (also on with ``RECFX_DEBUG=1``).
        dump_after: pass names (or ``"all"``, ``"capture"``) after which to write the graph as text and a picture.
        dump_dir / dump_format: where and how (``png``, ``svg`` or ``None`` for text only).
        check_numerics: compare the compiled module with the original model on the example inputs.
        backend_options: options for the backend (e.g. ``{"mode": "max-autotune"}`` for inductor).
    """

    dynamic_batch: bool = True
    dynamic_dims: dict[str, dict[int, Any]] = dataclasses.field(default_factory=dict)
    passes: tuple[str, ...] | None = None
    user_passes: tuple[Placement, ...] = ()
    check_invariants: bool = False
    dump_after: tuple[str, ...] = ()
    dump_dir: str = "recfx_dumps"
    dump_format: str | None = "png"
    check_numerics: bool = True
    backend_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.dump_format not in (None, "png", "svg"):
            raise ValueError(f"dump_format must be 'png', 'svg' or None, got {self.dump_format!r}")
        if not isinstance(self.dynamic_dims, dict):
            raise TypeError(f"dynamic_dims must be a dict like {{'tokens': {{1: 'seq'}}}}, got {self.dynamic_dims!r}")
        for name, dims in self.dynamic_dims.items():
            ok = isinstance(dims, dict) and all(isinstance(d, int) and _is_dim(s) for d, s in dims.items())
            if not ok:
                raise TypeError(f"dynamic_dims[{name!r}] must map dim index (int) to a symbol name or a derived dim "
                                f"('8*batch', 'batch+1', a torch.export Dim), got {dims!r}")
        for field in ("passes", "dump_after"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise TypeError(f"{field} must be a tuple of pass names, got {value!r}")
        if not all(isinstance(p, Placement) for p in self.user_passes):
            raise TypeError("user_passes must hold recfx.passes.Placement objects")

    @property
    def invariants_on(self) -> bool:
        return self.check_invariants or debug_enabled()


def _is_dim(value: Any) -> bool:
    """A symbol name, a derived-dim string, or a torch.export ``Dim`` / derived ``Dim``."""
    return isinstance(value, str) or type(value).__module__ == "torch.export.dynamic_shapes"
