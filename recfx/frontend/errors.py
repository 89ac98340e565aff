"""Turn ``torch.export`` failures into errors that name the operation, the user's source line and a fix."""

from __future__ import annotations

import os
import sysconfig
import traceback

import torch

from recfx.errors import CaptureError

_TORCH_DIR = os.path.dirname(torch.__file__)
_RECFX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"])
_MODELS_DIR = os.path.join(_RECFX_DIR, "models")


def _is_library(path: str) -> bool:
    """True for torch, the standard library and recfx's compiler code (recfx's reference models count as user code)."""
    path = os.path.abspath(path)
    if path.startswith(_MODELS_DIR):
        return False
    return path.startswith((_TORCH_DIR, _RECFX_DIR, _STDLIB_DIR))

_HINTS = (
    (
        ("data-dependent", "GuardOnDataDependentSymNode", "item()"),
        "The model branches or sizes a tensor on tensor *values*. Make the control flow shape-only "
        "(torch.where, masking), use torch.cond for real branches, or move the decision out of the model.",
    ),
    (
        ("Constraints violated", "specialized", "ConstraintViolation"),
        "A dimension marked dynamic is forced to a constant by the model (e.g. a reshape to a fixed size) "
        "or must equal another one. Mark fewer dims dynamic (dynamic_batch=False / fewer dynamic_dims), or make "
        "the model shape-generic.",
    ),
    (
        ("not supported", "Unsupported", "unsupported"),
        "Replace the operation with a traceable equivalent (plain torch ops) or wrap it as a torch.library custom op.",
    ),
)


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The innermost traceback frame that is neither in torch, nor in recfx, nor in the standard library."""
    found = None
    for cur in _chain(exc):
        for fs in traceback.extract_tb(cur.__traceback__):
            if not _is_library(fs.filename):
                found = fs
    return found


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:400]
    return type(exc).__name__


def export_failure(model: torch.nn.Module, exc: BaseException) -> CaptureError:
    """Build the :class:`CaptureError` for a failed export of ``model``."""
    text = "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    frame = _user_frame(exc)
    where = f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}" if frame else "unknown source line"
    hint = next((h for keys, h in _HINTS if any(k in text for k in keys)), "See the torch.export message below.")
    msg = (
        f"torch.export could not capture {type(model).__name__}.\n"
        f"  failing operation: {type(exc).__name__}: {_first_line(exc)}\n"
        f"  at: {where}\n"
        f"  what to do: {hint}"
    )
    return CaptureError(msg)
