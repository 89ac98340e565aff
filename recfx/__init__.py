"""recfx: a compiler for generative-recommender and long-context attention models.

    >>> import recfx
    >>> sorted(recfx.backends.BACKENDS.names())[:2]
    ['eager', 'inductor']
"""

from recfx import ops  # noqa: F401  (defines the recfx:: ops before passes and backends use them)

# isort: split
from recfx import backends, frontend, passes, runtime
from recfx._version import __version__
from recfx.api import compile, export_onnx, load
from recfx.compile_config import CompileConfig
from recfx.errors import BackendUnavailableError, CaptureError, PassError, RecfxError, UnknownKeyError
from recfx.passes import Placement, register_pass
from recfx.passes.quant import QuantConfig, QuantRule  # noqa: F401  (FP8 quantization settings)
from recfx.runtime import CompiledModule, CompileReport
from recfx.runtime.bundle import (  # noqa: F401  (bundle errors: docs/deploy.md)
    BundleDeviceError,
    BundleError,
    BundleIntegrityError,
    BundleUnsupportedError,
    BundleVersionError,
)

__all__ = [
    "BackendUnavailableError", "CaptureError", "CompileConfig", "CompileReport", "CompiledModule", "PassError",
    "Placement", "RecfxError", "UnknownKeyError", "__version__", "backends", "compile", "export_onnx", "frontend",
    "load", "passes", "register_pass", "runtime",
]
