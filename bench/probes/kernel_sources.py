"""Copy the Triton source of a benchmark's heaviest Inductor kernels out of the Inductor cache, for reading later.

A profile names kernels (``triton_red_fused_..._53``); what a kernel computes, and why it is a looped rather than a
persistent reduction, is in its source, which stays on the GPU machine unless copied. Run after a ``bench/fp8.py``
step on the same machine::

    python3 bench/probes/kernel_sources.py OUT/bench.json OUT/kernels [--top 12]

For each profiled row's top kernels whose name starts with ``triton_``, the first cached module defining it is copied
to ``OUT/kernels/<backend>-b<batch>-<kernel>.py`` (a few KB each); ``index.json`` maps names to files and times.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path


def cache_dir() -> Path:
    """Inductor's cache folder (``TORCHINDUCTOR_CACHE_DIR``, else its default), as Inductor itself computes it."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir

    return Path(inductor_cache_dir())


def index_sources(root: Path) -> dict[str, Path]:
    """Kernel name -> the cached module that defines it (``def triton_...(``)."""
    found: dict[str, Path] = {}
    pattern = re.compile(r"^def (triton_\w+)\(", re.M)
    for path in root.rglob("*.py"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if len(text) > 200_000:  # whole-graph output code, not one kernel's module
            continue
        for name in pattern.findall(text):
            found.setdefault(name, path)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json")
    parser.add_argument("out")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    rows = json.loads(Path(args.bench_json).read_text())["rows"]
    sources = index_sources(cache_dir())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for row in rows:
        profile = row.get("profile") or {}
        for kernel in profile.get("top_kernels", [])[: args.top]:
            name = kernel["name"]
            if not name.startswith("triton_"):
                continue
            source = sources.get(name)
            target = out / f"{row['backend']}-b{row['batch']}-{name[:100]}.py"
            if source is not None:
                shutil.copyfile(source, target)
            index.append({"backend": row["backend"], "batch": row["batch"], "kernel": name, "ms": kernel["ms"],
                          "file": target.name if source is not None else None})
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{sum(1 for i in index if i['file'])} of {len(index)} kernel sources copied from {cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
