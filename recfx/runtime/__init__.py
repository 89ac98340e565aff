"""Runtime: the compiled module users call, its report, and output comparison."""

from recfx.analysis.numerics import OutputCheck, compare_outputs, cosine
from recfx.runtime.compiled import CompiledModule
from recfx.runtime.report import CompileReport

__all__ = ["CompileReport", "CompiledModule", "OutputCheck", "compare_outputs", "cosine"]
