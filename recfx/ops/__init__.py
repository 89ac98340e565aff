"""Custom operators (``recfx::`` namespace), each defined once with torch.library plus a fake implementation.

Importing this package defines every op (each module here).
"""

import sys as _sys

from recfx._plugins import import_submodules as _import_submodules

_import_submodules(_sys.modules[__name__])
