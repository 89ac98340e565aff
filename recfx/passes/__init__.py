"""Graph passes over the captured aten graph, and the pass manager that runs them.

Importing this package registers the built-in passes. The default pipeline is :data:`CANONICAL_PASSES`; backends
append their own stages (quantization, fusion, lowering).
"""

import sys as _sys

from recfx._plugins import import_submodules as _import_submodules
from recfx.passes import dce
from recfx.passes.base import PASSES, STAGES, PassContext, PassResult, PassSpec, register_pass
from recfx.passes.graph_view import dominators, isolate, post_dominators, to_networkx, users
from recfx.passes.invariants import register_invariant
from recfx.passes.manager import PassManager, PassRecord, Placement, insert_placements
from recfx.passes.rewrite import Match, Rewrite

#: Canonicalisation, in order: drop no-ops first so that CSE and the linear rewrite see through them; autocast /
#: grad-mode regions are opened before the linear rewrite so that it (and the FP8 policy) sees their GEMMs.
CANONICAL_PASSES: tuple[str, ...] = ("remove_noops", "dce", "cse", "inline_autocast", "matmul_to_linear",
                                     "constant_folding", "dce_final")


@register_pass("dce_final", stage="canonicalize", postcondition=dce._dead_nodes)
def _dce_final(gm):  # type: ignore[no-untyped-def]
    """Every remaining pure node is used (run again after the rewrites of the stage)."""
    return dce.dead_code_elimination(gm)


_import_submodules(_sys.modules[__name__])  # registers every pass module (and subpackages such as quant)

__all__ = [
    "CANONICAL_PASSES", "PASSES", "STAGES", "Match", "PassContext", "PassManager", "PassRecord", "PassResult",
    "PassSpec", "Placement", "Rewrite", "dominators", "insert_placements", "isolate", "post_dominators",
    "register_invariant", "register_pass", "to_networkx", "users",
]
