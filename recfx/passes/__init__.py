"""Graph passes over the captured aten graph, and the pass manager that runs them.

Importing this package registers the built-in passes. Every default pass list is in :mod:`recfx.passes.pipelines`
(the canonical pipeline :data:`CANONICAL_PASSES`; backends append quantization, fusion and lowering).
"""

import sys as _sys

from recfx._plugins import import_submodules as _import_submodules
from recfx.passes.base import PASSES, STAGES, PassContext, PassResult, PassSpec, register_pass
from recfx.passes.graph_view import dominators, isolate, post_dominators, to_networkx, users
from recfx.passes.invariants import register_invariant
from recfx.passes.manager import PassManager, PassRecord, Placement, insert_placements
from recfx.passes.pipelines import CANONICAL_PASSES
from recfx.passes.rewrite import Match, Rewrite

_import_submodules(_sys.modules[__name__])  # registers every pass module (and subpackages such as quant)

__all__ = [
    "CANONICAL_PASSES", "PASSES", "STAGES", "Match", "PassContext", "PassManager", "PassRecord", "PassResult",
    "PassSpec", "Placement", "Rewrite", "dominators", "insert_placements", "isolate", "post_dominators",
    "register_invariant", "register_pass", "to_networkx", "users",
]
