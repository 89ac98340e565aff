"""Atomic file writes: write to a temporary file beside the target, then rename; nothing half-written is left.

Files get the mode any ``open(path, "w")`` gives: 0666 less the umask for a new file, the old file's mode when one is
replaced. ``check_writable_file`` / ``check_writable_folder`` let a command refuse a bad output path before its work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_NEW_FILE_MODE = 0o666  # what open() asks for; the kernel takes the umask off


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``, on error it is removed.

    Raises:
        PermissionError / FileNotFoundError: the target folder is not writable or does not exist (before any write).
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path)
    check_writable_file(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = _create_temp(folder, path)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):  # replacing a file keeps its mode, as open(path, "w") does
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _create_temp(folder: Path, path: Path) -> Path:
    """An empty new file ``.<name>.<random><suffix>`` in ``folder``, created with the umask's mode (not mkstemp's
    0600)."""
    for _ in range(100):
        tmp = folder / f".{path.name}.{secrets.token_hex(6)}{path.suffix or '.tmp'}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}: 100 names were taken")


def check_writable_file(path: str | Path) -> None:
    """Raise before any work when a file cannot be written at ``path``.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileNotFoundError: its folder does not exist (or a part of it is a file).
        PermissionError: its folder is not writable.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder; give a file name")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: folder {folder} is not writable")


def check_writable_folder(path: str | Path) -> None:
    """Raise before any work when ``path`` is not a writable folder and cannot be created as one.

    Raises:
        NotADirectoryError: ``path`` or one of its parents is a file.
        PermissionError: the folder (or the nearest existing parent, where it would be created) is not writable.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise NotADirectoryError(f"cannot write into folder {path}: it {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise PermissionError(f"cannot write into folder {path}: it {what}")


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
