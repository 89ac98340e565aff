"""recfx/_io.py: atomic writes leave nothing half-written and give files the mode open() would (not mkstemp's 0600)."""

import os
import stat

import pytest

from recfx._io import atomic_path, atomic_write_text, check_writable_file, check_writable_folder


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "hello")
    with open(tmp_path / "b.txt", "w") as f:  # what any other file gets
        f.write("hello")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="midway"), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("midway")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_checks_name_the_problem(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        check_writable_file(tmp_path / "f" / "x.json")
    with pytest.raises(IsADirectoryError):
        check_writable_file(tmp_path)
    with pytest.raises(NotADirectoryError, match="is inside"):
        check_writable_folder(tmp_path / "f" / "sub" / "deeper")
    check_writable_folder(tmp_path / "new" / "deeper")  # created later: its nearest existing parent is writable
    assert not (tmp_path / "new").exists()
