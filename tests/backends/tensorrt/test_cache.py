"""recfx/backends/tensorrt/cache.py and the plan writer / verified reader (build.write_plan, runtime.read_manifest):
keys change with everything a plan depends on; a plan is written atomically and trusted only when its bytes match
its manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from recfx.backends.tensorrt import build
from recfx.backends.tensorrt.build import write_plan
from recfx.backends.tensorrt.cache import engine_key
from recfx.backends.tensorrt.profiles import derive_profiles
from recfx.backends.tensorrt.runtime import manifest_profiles, read_manifest

ONNX = "ab" * 32
PROFILES = [{"name": "p0", "shapes": {"x": [[1, 4], [8, 4], [32, 4]]}}]
BASE = (ONNX, PROFILES, {"optimization_level": 3}, "10.13.0", (9, 0))


WIDER = [{"name": "p0", "shapes": {"x": [[1, 4], [8, 4], [64, 4]]}}]


@pytest.mark.parametrize(("index", "other"), [(0, "cd" * 32), (1, WIDER), (2, {"optimization_level": 5}),
                                              (3, "10.14.0"), (4, (8, 9))])
def test_key_changes_with_each_input(index: int, other: object) -> None:
    changed = list(BASE)
    changed[index] = other
    assert engine_key(*BASE) == engine_key(*BASE)
    assert engine_key(*changed) != engine_key(*BASE)  # type: ignore[arg-type]


def test_key_rejects_a_non_digest() -> None:
    with pytest.raises(ValueError, match="hex SHA-256"):
        engine_key("model.onnx", PROFILES, {}, "10.13", (9, 0))


def _profiles():  # type: ignore[no-untyped-def]
    return derive_profiles([("x", ("batch", 4))], [{"batch": (1, 8, 32)}], names=["short"])


def test_plan_and_manifest_round_trip(tmp_path: Path) -> None:
    plan = tmp_path / "m.plan"
    manifest = write_plan(plan, b"plan-bytes", _profiles(), "k" * 64)
    assert manifest == tmp_path / "m.plan.json"
    record = read_manifest(plan)
    assert record["key"] == "k" * 64 and record["plugins"] == [{"id": "recfx::KsaAttention", "version": "1"}]
    assert manifest_profiles(record) == _profiles()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json"]  # no temporary files left


def test_changed_or_unlisted_plans_are_refused(tmp_path: Path) -> None:
    plan = tmp_path / "m.plan"
    write_plan(plan, b"plan-bytes", _profiles(), "k" * 64)
    plan.write_bytes(b"plan-bytes-changed")
    with pytest.raises(ValueError, match="does not match its manifest"):
        read_manifest(plan)
    (tmp_path / "m.plan.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no manifest"):
        read_manifest(plan)


def test_a_failed_write_leaves_the_old_plan_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = tmp_path / "m.plan"
    write_plan(plan, b"old", _profiles(), "k" * 64)

    def broken(path: object, text: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(build, "atomic_write_text", broken)
    with pytest.raises(OSError, match="disk full"):
        write_plan(plan, b"new", _profiles(), "k" * 64)
    # the plan was replaced but its manifest was not: the reader refuses it rather than trusting it
    with pytest.raises(ValueError, match="does not match its manifest"):
        read_manifest(plan)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan", "m.plan.json"]
