"""Dependencies point down: no module of recfx imports a module of a higher layer (docs/architecture.md, "Layers").

Every ``import`` in recfx/ counts, at module level, inside functions and under ``TYPE_CHECKING`` alike: a
function-local import that dodges a cycle is still an upward dependency. Modules of one layer may import each
other. The layers, low to high, are ``LAYERS``; a module belongs to the layer of its longest matching prefix, so a
few ground-floor modules (the executable specs and metrics, importing only torch) sit below the rest of their
package. A new top-level package fails here until it is given a layer (here and in the docs' table).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: (layer, module prefixes), lowest first. ``recfx`` itself (the package ``__init__``) is the API.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("recfx._version", "recfx.errors", "recfx._io", "recfx.registry", "recfx._plugins", "recfx.config")),
    ("spec", ("recfx.ops.ksa_layout", "recfx.ops.gqa", "recfx.ops.fp8_terms", "recfx.analysis.numerics",
              "recfx.analysis.stats")),
    ("kernels", ("recfx.kernels",)),
    ("ops", ("recfx.ops",)),
    ("analysis", ("recfx.analysis",)),
    ("frontend", ("recfx.frontend",)),
    ("passes", ("recfx.passes",)),
    ("onnx", ("recfx.onnx",)),
    ("backends", ("recfx.backends",)),
    ("runtime", ("recfx.runtime",)),
    ("api", ("recfx", "recfx.api", "recfx.compile_config")),
    ("serving", ("recfx.serving",)),
    ("models", ("recfx.models",)),
    ("bench", ("recfx.bench",)),
    ("tools", ("recfx.tools",)),
)


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module`` (longest matching prefix; ``recfx`` matches only itself)."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "recfx" and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every recfx module that ``path`` imports, wherever the statement is."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # ``from recfx import models`` imports the module recfx.models
                sub = f"{base}.{alias.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (root / Path(*sub.split(".")) / "__init__.py").is_file()
                found.append((node.lineno, sub if is_module else base))
    return [(line, m) for line, m in found if m == "recfx" or m.startswith("recfx.")]


def violations(root: Path) -> list[str]:
    """Every upward import, and every module without a layer, under ``root/recfx``."""
    problems = []
    for path in sorted((root / "recfx").rglob("*.py")):
        source = module_name(path, root)
        here = layer_of(source)
        if here is None:
            problems.append(f"{source} belongs to no layer: add it to LAYERS in tests/test_layers.py and to the "
                            "layer table of docs/architecture.md")
            continue
        for line, target in imports(path, root):
            there = layer_of(target)
            if there is not None and there > here:
                problems.append(f"{path.relative_to(root)}:{line}: {source} ({LAYERS[here][0]}) imports {target} "
                                f"({LAYERS[there][0]}), a higher layer")
    return problems


def test_no_module_imports_a_higher_layer() -> None:
    problems = violations(ROOT)
    assert not problems, "upward imports (docs/architecture.md, Layers):\n" + "\n".join(problems)


def test_the_docs_list_the_same_layers_in_the_same_order() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", text, flags=re.MULTILINE)
    assert [name for _, name in rows] == [name for name, _ in LAYERS]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("body", [
    "from recfx.runtime.compiled import CompiledModule\n",
    "def f():\n    import recfx.runtime.compiled\n",  # function-local
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from recfx.runtime import compiled\n",
    "from ...runtime import compiled\n",  # relative, from recfx/passes/quant/
    "def f():\n    import recfx\n    return recfx.compile\n",  # the API from below
    "from recfx import models\n",
])
def test_an_upward_import_is_found(tmp_path: Path, body: str) -> None:
    _write(tmp_path, {"recfx/__init__.py": "", "recfx/runtime/__init__.py": "", "recfx/runtime/compiled.py": "",
                      "recfx/models/__init__.py": "", "recfx/passes/__init__.py": "",
                      "recfx/passes/quant/__init__.py": "", "recfx/passes/quant/report.py": body})
    problems = violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("recfx/passes/quant/report.py:")
    assert "recfx.passes.quant.report (passes) imports recfx" in problems[0] and "a higher layer" in problems[0]


def test_downward_and_same_layer_imports_pass_and_unplaced_modules_fail(tmp_path: Path) -> None:
    _write(tmp_path, {"recfx/__init__.py": "from recfx import runtime\n",
                      "recfx/runtime/__init__.py": "from . import compiled\nfrom recfx.passes import manager\n",
                      "recfx/runtime/compiled.py": "from recfx.ops.ksa_layout import ksa_mask\n",
                      "recfx/passes/__init__.py": "", "recfx/passes/manager.py": "",
                      "recfx/ops/__init__.py": "", "recfx/ops/ksa_layout.py": "import torch\n"})
    assert violations(tmp_path) == []
    _write(tmp_path, {"recfx/newpkg/__init__.py": ""})
    assert violations(tmp_path) == ["recfx.newpkg belongs to no layer: add it to LAYERS in tests/test_layers.py and "
                                    "to the layer table of docs/architecture.md"]


def test_ground_floor_modules_sit_below_the_rest_of_their_package() -> None:
    names = [name for name, _ in LAYERS]
    assert names[layer_of("recfx.ops.ksa_layout")] == "spec" and names[layer_of("recfx.ops.ksa")] == "ops"  # type: ignore[index]
    assert names[layer_of("recfx.analysis.numerics")] == "spec"  # type: ignore[index]
    assert names[layer_of("recfx")] == "api" and layer_of("recfxother") is None  # type: ignore[index]
