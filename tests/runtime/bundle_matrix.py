"""The full save -> load matrix (not part of the quick suite): every CPU backend x onerec-tiny, ksa-tiny, dlrm-small.

Each cell compiles at batch 2, saves a bundle, loads it and checks that the loaded module's outputs equal the
in-process module's bit for bit at batches 2 and 5. One JSON line per cell; the exit status is 1 when any cell failed.

    PYTHONPATH=$PWD python -m tests.runtime.bundle_matrix --out /tmp/bundle_matrix.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.utils._pytree import tree_flatten

import recfx
from recfx.models import get_model

MODELS = ("onerec-tiny", "ksa-tiny", "dlrm-small")
BACKENDS = ("eager", "eager-fp8", "ort", "ort-fp8", "inductor", "inductor-fp8")
BATCHES = (2, 5)


def identical(a: object, b: object) -> bool:
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    return spec_a == spec_b and all(torch.equal(x, y) for x, y in zip(leaves_a, leaves_b))


def cell(model_name: str, backend: str, folder: Path) -> dict[str, object]:
    spec = get_model(model_name)
    model = spec.build()
    t0 = time.perf_counter()
    compiled = recfx.compile(model, spec.example_inputs(2), backend=backend)
    t1 = time.perf_counter()
    path = compiled.save(folder / f"{model_name}-{backend}")
    t2 = time.perf_counter()
    loaded = recfx.load(path)
    t3 = time.perf_counter()
    same = {}
    for batch in BATCHES:
        inputs = spec.example_inputs(batch, seed=batch)
        same[batch] = identical(compiled(*inputs), loaded(*inputs))
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return {"model": model_name, "backend": backend, "identical": same, "compile_s": round(t1 - t0, 2),
            "save_s": round(t2 - t1, 2), "load_s": round(t3 - t2, 3), "bundle_bytes": size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here too")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            for model_name in args.models.split(","):
                try:
                    row = cell(model_name, backend, Path(tmp))
                    failed |= not all(row["identical"].values())  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001 - one failing cell must not hide the others
                    row = {"model": model_name, "backend": backend, "error": f"{type(exc).__name__}: {exc}"[:2000],
                           "trace": traceback.format_exc()[-3000:]}
                    failed = True
                line = json.dumps(row)
                print(line, flush=True)
                if args.out is not None:
                    with open(args.out, "a") as f:
                        f.write(line + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
