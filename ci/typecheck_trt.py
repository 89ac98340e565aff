"""``mypy --disallow-untyped-defs`` over recfx/backends/tensorrt against TensorRT's and Torch-TensorRT's own types.

Neither package is visible to mypy as installed: ``tensorrt-stubs`` puts ``.pyi`` files in a ``tensorrt`` folder
without ``py.typed``, and Torch-TensorRT ships no ``py.typed``; with the project's ``ignore_missing_imports`` every
TensorRT name would silently be ``Any``. This script puts those packages in a temporary folder on ``MYPYPATH``
so that every TensorRT / Torch-TensorRT name and signature the code uses is checked (their own sources are read
with ``--follow-imports=silent``: their errors are not ours). tensorrt-stubs 10.13's generated ``.pyi`` files are
not valid Python in a few signatures (a parameter named ``in``; a parameter without a default after defaulted
ones): the copy repairs exactly those (:data:`STUB_REPAIRS`) and must then parse. The script first checks that a
deliberately wrong use of TensorRT is caught, so a check that cannot fail is never reported as passing.

Exit status: mypy's; 3 when ``tensorrt-stubs`` or Torch-TensorRT's sources are not installed (``make install``
installs both). Run from the repository root: ``python ci/typecheck_trt.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: The packages whose types are checked, and the pip package that provides each.
PACKAGES = {"tensorrt": "tensorrt-stubs", "tensorrt_bindings": "tensorrt-stubs",
            "torch_tensorrt": "torch-tensorrt (pip install --no-deps torch-tensorrt)"}
TARGET = "recfx/backends/tensorrt"
#: This check's own folder (git-ignored): the repaired stubs and mypy's cache for them.
CACHE = Path(".mypy_cache") / "recfx-trt"
#: Regex repairs of tensorrt-stubs' generated signatures that are not valid Python (pattern, replacement).
STUB_REPAIRS = ((re.compile(r"([(,] ?)in: "), r"\1in_: "),
                (re.compile(r"(shift: Weights = None, scale: Weights = None, power: Weights = None, "
                            r"channel_axis: int)\)"), r"\1 = ...)"))
#: mypy's settings for this check: the project's, plus skipping the large libraries that the TensorRT code only
#: passes through (``make typecheck`` checks recfx's use of them); this keeps a cold run to seconds, not a minute.
CONFIG = """[mypy]
python_version = 3.11
ignore_missing_imports = True
warn_unused_ignores = False

[mypy-torch.*,sympy.*,numpy.*,triton.*,onnx.*,onnxscript.*,onnx_ir.*,onnxruntime.*,networkx.*,rich.*]
follow_imports = skip
"""
_CANARY = "import tensorrt as trt\nx: int = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED_MISSPELLED\n"


def package_dirs() -> dict[str, Path]:
    """Where each package's sources are (a stub folder or a source package), without importing them."""
    site = [Path(p) for p in sys.path if p.endswith("site-packages")]
    found: dict[str, Path] = {}
    for name, pip in PACKAGES.items():
        hits = [s / name for s in site if (s / name / "__init__.pyi").is_file() or (s / name / "__init__.py").is_file()]
        if not hits:
            raise FileNotFoundError(f"{name} is not installed for type checking; install {pip}")
        found[name] = hits[0]
    return found


def copy_repaired(src: Path, dst: Path) -> None:
    """Copy a stub package, repairing :data:`STUB_REPAIRS` in its ``.pyi`` files.

    Raises:
        SyntaxError: a stub file still does not parse (a newer tensorrt-stubs broke it differently).
    """
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for stub in dst.rglob("*.pyi"):
        text = stub.read_text()
        for pattern, replacement in STUB_REPAIRS:
            text = pattern.sub(replacement, text)
        ast.parse(text, filename=str(stub))
        stub.write_text(text)


def mypy(paths: list[str], stub_root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MYPYPATH=str(stub_root))
    config = CACHE / "mypy.ini"
    config.write_text(CONFIG)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--disallow-untyped-defs",
           "--follow-imports=silent", "--cache-dir", str(CACHE / "cache"), *paths]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)


def main() -> int:
    if importlib.util.find_spec("mypy") is None:
        print("mypy is not installed", file=sys.stderr)
        return 3
    try:
        dirs = package_dirs()
    except FileNotFoundError as err:
        print(f"typecheck-trt: {err}", file=sys.stderr)
        return 3
    root = CACHE / "types"  # a stable folder, so that mypy's incremental cache is reused
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name, path in dirs.items():
        if name.startswith("tensorrt"):
            copy_repaired(path, root / name)
        else:
            (root / name).symlink_to(path.resolve(), target_is_directory=True)
    canary = root / "canary_wrong_trt_use.py"
    canary.write_text(_CANARY)
    result = mypy([str(canary), TARGET], root)
    if not ours(result, canary.as_posix()):
        print("typecheck-trt: mypy did not see TensorRT's types (a wrong attribute passed); not checking",
              file=sys.stderr)
        return 1
    errors = ours(result, TARGET)
    print("\n".join(errors) if errors else f"typecheck-trt: {TARGET} is clean against TensorRT's and "
          "Torch-TensorRT's types")
    return 1 if errors else 0


def ours(result: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    """mypy's lines about our files (the stubs' own complaints, e.g. their ``bool`` variable, are not ours)."""
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith(prefix) and ": error:" in line]


if __name__ == "__main__":
    sys.exit(main())
