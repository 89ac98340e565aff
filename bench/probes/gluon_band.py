"""Probe: the Gluon band kernel (``recfx/kernels/ksa_gluon.py``) against the Triton kernel, checked, then timed.

Both run with the summary prefix from the dense cuDNN call (``prefix="dense"``); ``RECFX_KSA_BAND`` picks the band
kernel and ``RECFX_KSA_GLUON_CONFIG`` the Gluon block shape. Checks: full outputs vs float64 over windows, GQA,
head dims, dtypes, ragged tails and batch 2. Timing: every Gluon shape beside the Triton kernel and SDPA causal over
the text, in the same run (rounds, median); "shipped" times the op's own choices at each size (at 16K: the Triton
kernel walking the prefix itself), so a threshold change can be judged in one call.

    PYTHONPATH=$PWD python3 bench/probes/gluon_band.py out.json [--sizes 16384,32768,65536] [--configs "128,2;64,3"]

(--configs: BLOCK_N,STAGES[,Q_BUFS[,BALANCED[,SMEM]]] of the Gluon kernel, as RECFX_KSA_GLUON_CONFIG, e.g.
"128,2,2,1,1;128,2,2,0,1". --ablate: timing without a part of the kernel; --parts windows: the band alone over
several windows, which splits its time into a cost per key tile and one per row tile; see --help.) Results of the
design steps are in bench/results/ksa_gluon_probe*.json / .log, ksa_gluon_ablation*.log and ksa_gluon_windows*; the
kernel variants they measured are described in docs/ksa.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier
from triton.testing import do_bench

from recfx.kernels import ksa_dense, ksa_gluon, ksa_gluon_kernel
from recfx.kernels import ksa_prefill as prefill_mod
from recfx.kernels.ksa_reference import count_allowed_pairs, prefill_reference
from recfx.models.ksa_mask import interleaved_length

CHECKS = [  # (B, n_text, k, W, H, Hkv, D, dtype)
    (1, 1040, 8, 128, 16, 16, 128, torch.bfloat16), (1, 2048, 8, 128, 16, 16, 128, torch.bfloat16),
    (1, 4096, 8, 128, 16, 4, 128, torch.bfloat16), (1, 2040, 8, 3, 8, 2, 128, torch.float16),
    (1, 1000, 8, 0, 4, 4, 128, torch.bfloat16), (1, 1536, 8, 1, 4, 1, 64, torch.bfloat16),
    (2, 1992, 8, 5, 8, 4, 128, torch.bfloat16), (1, 1024, 4, 7, 4, 4, 128, torch.bfloat16),
    (1, 1040, 8, 0, 4, 4, 128, torch.bfloat16), (1, 8256, 8, 128, 16, 16, 128, torch.bfloat16),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, window: int, band: str,
        config: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    os.environ["RECFX_KSA_BAND"] = band
    if config:
        os.environ["RECFX_KSA_GLUON_CONFIG"] = config
    else:
        os.environ.pop("RECFX_KSA_GLUON_CONFIG", None)
    return prefill_mod.ksa_prefill(q, k, v, chunk, 1, window, q.shape[3] ** -0.5, prefix="dense")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def checks(configs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for b, n, chunk, w, h, hkv, d, dtype in CHECKS:
        length = interleaved_length(n, chunk, 1)
        torch.manual_seed(n + w)
        q = torch.randn(b, length, h, d, device="cuda", dtype=dtype)
        k, v = (torch.randn(b, length, hkv, d, device="cuda", dtype=dtype) for _ in range(2))
        ref, ref_lse = prefill_reference(q.double(), k.double(), v.double(), chunk, 1, w, d**-0.5)
        for band, config in [("triton", None)] + [("gluon", c) for c in configs]:
            row: dict[str, Any] = {"B": b, "n": n, "k": chunk, "W": w, "H": h, "Hkv": hkv, "D": d,
                                   "dtype": str(dtype), "band": band, "config": config}
            try:
                out, lse = run(q, k, v, chunk, w, band, config)
                row["supported"] = ksa_gluon.band_supported(q, k, v, chunk, 1)  # under the env run() set
                torch.cuda.synchronize()
                row.update(rel_err=rel(out, ref), lse_max_abs=(lse.double() - ref_lse).abs().max().item(),
                           finite=bool(torch.isfinite(out).all() and torch.isfinite(lse).all()))
                row["ok"] = row["finite"] and row["rel_err"] < 1e-2 and row["lse_max_abs"] < 2e-2
            except Exception as err:  # noqa: BLE001 - a failure is a result
                row["error"] = f"{type(err).__name__}: {str(err)[:400]}"
            log(f"check {json.dumps(row)}")
            rows.append(row)
    return rows


def _with_kernel(module: Any, fn: Any) -> Any:
    """Run ``fn`` with ``module`` as the launcher's device code."""
    shipped = ksa_gluon.kernel
    ksa_gluon.kernel = module
    try:
        return fn()
    finally:
        ksa_gluon.kernel = shipped


def _load_kernel(path: str) -> Any:
    """Another version of ``ksa_gluon_kernel.py`` (e.g. ``git show REV:recfx/kernels/ksa_gluon_kernel.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("alt_ksa_gluon_kernel", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn: Any, rep_ms: int) -> float:
    fn()
    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def timing(n: int, configs: list[str], rep_ms: int, rounds: int, with_triton: bool = True,
           alt: Any = None) -> dict[str, Any]:
    h, d, chunk, w = 16, 128, 8, 128
    length = interleaved_length(n, chunk, 1)
    torch.manual_seed(n)
    q, k, v = (torch.randn(1, length, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qt, kt, vt = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ideal = (n * (n + 1) // 2) / count_allowed_pairs(length, chunk, 1, w)
    want, _ = run(q, k, v, chunk, w, "triton" if with_triton else "gluon")

    def shipped() -> Any:  # what the op runs at this size: its own prefix choice, band kernel and configuration
        for name in ("RECFX_KSA_BAND", "RECFX_KSA_GLUON_CONFIG", "RECFX_KSA_PREFIX"):
            os.environ.pop(name, None)
        return prefill_mod.ksa_prefill(q, k, v, chunk, 1, w, d**-0.5)

    fns: dict[str, Any] = {"sdpa": lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True),
                           "shipped": shipped,
                           "triton": lambda: run(q, k, v, chunk, w, "triton"),
                           "dense_part": lambda: ksa_dense.dense_prefix(q, k, v, chunk, w, d**-0.5)}
    if not with_triton:  # (its autotuning takes minutes in a fresh process; "vs_triton" is then vs the Gluon default)
        del fns["triton"], fns["shipped"]
    row: dict[str, Any] = {"n": n, "ideal_ratio": ideal}
    given = ksa_dense.dense_prefix(q, k, v, chunk, w, d**-0.5)
    out, lse = torch.empty_like(q), torch.empty(1, h, length, device="cuda")
    for config in configs:
        os.environ["RECFX_KSA_GLUON_CONFIG"] = config
        try:
            got, _ = run(q, k, v, chunk, w, "gluon", config)
            row[f"gluon[{config}]_vs_triton_rel"] = rel(got, want)
        except Exception as err:  # noqa: BLE001
            row[f"gluon[{config}]_error"] = f"{type(err).__name__}: {str(err)[:400]}"
            continue
        fns[f"gluon[{config}]"] = lambda c=config: run(q, k, v, chunk, w, "gluon", c)

        def band_only(c: str = config) -> None:
            os.environ["RECFX_KSA_GLUON_CONFIG"] = c
            ksa_gluon.ksa_band(q, k, v, out, lse, given, chunk, w, d**-0.5)

        fns[f"band_only[{config}]"] = band_only
        if alt is not None:  # the same configuration of another version of the device code (--alt-kernel)
            fns[f"alt_gluon[{config}]"] = lambda f=fns[f"gluon[{config}]"]: _with_kernel(alt, f)
            fns[f"alt_band_only[{config}]"] = lambda f=band_only: _with_kernel(alt, f)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, rep_ms))
    for name, ts in times.items():
        row[f"{name}_ms"] = statistics.median(ts)
        if name in ("shipped", "triton") or name.startswith(("gluon[", "alt_gluon[")):
            row[f"{name}_fraction"] = row["sdpa_ms"] / row[f"{name}_ms"] / ideal
    log(f"timing {json.dumps(row)}")
    return row


def windows(n: int, sizes: list[int], rep_ms: int, rounds: int) -> dict[str, Any]:
    """The band kernel alone (shipped configuration) at n text tokens for several windows W: a row tile walks about
    W k / BLOCK_N + 1 key tiles, so the line through (tiles, ms) splits the time into a cost per key tile and a
    cost per row tile (prologue, epilogue, summary queries, pipeline drain)."""
    h, d, chunk = 16, 128, 8
    length = interleaved_length(n, chunk, 1)
    torch.manual_seed(n)
    q, k, v = (torch.randn(1, length, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out, lse = torch.empty_like(q), torch.empty(1, h, length, device="cuda")
    os.environ.pop("RECFX_KSA_GLUON_CONFIG", None)
    fns = {}
    for w in sizes:
        given = ksa_dense.dense_prefix(q, k, v, chunk, w, d**-0.5)
        fns[w] = lambda w=w, given=given: ksa_gluon.ksa_band(q, k, v, out, lse, given, chunk, w, d**-0.5)
    times: dict[int, list[float]] = {w: [] for w in fns}
    for _ in range(rounds):
        for w, fn in fns.items():
            times[w].append(timed(fn, rep_ms))
    row = {"n": n, "band_ms_by_window": {w: statistics.median(ts) for w, ts in times.items()}}
    log(f"windows {json.dumps(row)}")
    return row


@gluon.jit
def _no_summary_rows(q_base, k_base, v_base, o_base, lse_base, stride_ql, stride_kl, stride_vl, stride_ol,
                     c_first, n_chunks, qk_scale, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, ROWS: gl.constexpr):
    """Stand-in for ``ksa_gluon_kernel._summary_rows`` that computes nothing (``--ablate summary``)."""
    pass


@gluon.jit
def _no_summary_from_tiles(packs, first_pack, k_tile, v_tile, k_empty, v_empty, o_base, lse_base, stride_ol,
                           c_first, n_chunks, qk_scale, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr,
                           ROWS: gl.constexpr, HALF: gl.constexpr):
    """Stand-in for ``ksa_gluon_kernel._summary_from_tiles`` that only releases the held slot
    (``--ablate summary_smem``)."""
    mbarrier.arrive(k_empty)
    mbarrier.arrive(v_empty)


@gluon.jit
def _softmax_noexp(s, m_i, l_i, start, t, band_lo, qk_scale, masked, S_LAYOUT: gl.constexpr, BLOCK_N: gl.constexpr):
    """``ksa_gluon_kernel._softmax`` with P = scaled scores (no exponentials of the tile; --ablate noexp)."""
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = s * qk_scale - m_new[:, None]
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def _softmax_norescale(s, m_i, l_i, start, t, band_lo, qk_scale, masked, S_LAYOUT: gl.constexpr,
                       BLOCK_N: gl.constexpr):
    """``ksa_gluon_kernel._softmax`` with alpha = 1 (O never rescaled; --ablate norescale)."""
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - m_new[:, None])
    return p, gl.full_like(m_i, 1.0), m_new, l_i + gl.sum(p, 1)


@gluon.jit
def _softmax_nomask(s, m_i, l_i, start, t, band_lo, qk_scale, masked, S_LAYOUT: gl.constexpr, BLOCK_N: gl.constexpr):
    """``ksa_gluon_kernel._softmax`` that never masks (--ablate nomask)."""
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - m_new[:, None])
    alpha = gl.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def _no_prefix_start(PO, PL, stride_pop, stride_poh, stride_poc, stride_plp, stride_plh, stride_plc, dense_chunks,
                     h, t0, n_text, window, CHUNK: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr,
                     O_LAYOUT: gl.constexpr, ROW_S: gl.constexpr):
    """Stand-in for ``ksa_gluon_kernel._prefix_start``: every row starts empty (--ablate noprefix)."""
    return (gl.full([ROWS], float("-inf"), gl.float32, ROW_S), gl.zeros([ROWS], gl.float32, ROW_S),
            gl.zeros([ROWS, HEAD_DIM], gl.float32, O_LAYOUT))


@gluon.jit
def _no_store_rows(o, m_i, l_i, t0, o_base, lse_base, stride_ol, n_text, CHUNK: gl.constexpr, ROWS: gl.constexpr,
                   HEAD_DIM: gl.constexpr, O_LAYOUT: gl.constexpr, ROW_S: gl.constexpr):
    """Stand-in for ``ksa_gluon_kernel._store_rows`` that stores one value per row, so the work stays live
    (--ablate nostore)."""
    t = t0 + gl.arange(0, ROWS, layout=ROW_S)
    gl.store(lse_base + t, m_i + l_i + gl.convert_layout(gl.sum(o, 1), ROW_S), mask=t < n_text)


#: --ablate NAME: (the ksa_gluon_kernel function replaced, its stand-in)
ABLATIONS = {"summary": ("_summary_rows", _no_summary_rows),
             "summary_smem": ("_summary_from_tiles", _no_summary_from_tiles), "noexp": ("_softmax", _softmax_noexp),
             "norescale": ("_softmax", _softmax_norescale), "nomask": ("_softmax", _softmax_nomask),
             "noprefix": ("_prefix_start", _no_prefix_start), "nostore": ("_store_rows", _no_store_rows)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16384, 32768, 65536])
    p.add_argument("--configs", type=lambda s: s.split(";"), default=["128,2"])
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--alt-kernel", help="also time this version of ksa_gluon_kernel.py (A/B in one run)")
    p.add_argument("--no-triton", action="store_true", help="timing without the Triton kernel and the shipped path")
    p.add_argument("--parts", default="checks,timing", help="checks, timing, windows (comma separated)")
    p.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128, 256],
                   help="windows W of the windows part (band kernel alone, at each of --sizes)")
    p.add_argument("--ablate", choices=sorted(ABLATIONS), help="timing only, outputs wrong: the Gluon kernel "
                   "without its summary queries (summary: the L2 variant, smem 0; summary_smem: the shared-memory "
                   "one), without the exponentials of P "
                   "(noexp), without rescaling O (norescale), without masks (nomask), without the dense prefix's "
                   "loads (noprefix) or without the rows' stores (nostore), to see what each costs")
    args = p.parse_args()
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "ablate": args.ablate}
    if args.ablate:  # before anything compiles: the kernel resolves these names at compile time
        name, stand_in = ABLATIONS[args.ablate]
        setattr(ksa_gluon_kernel, name, stand_in)
    if "timing" in args.parts:
        alt = _load_kernel(args.alt_kernel) if args.alt_kernel else None
        result["timing"] = [timing(n, args.configs, args.rep_ms, args.rounds, not args.no_triton, alt)
                            for n in args.sizes]
    if "windows" in args.parts:
        result["windows"] = [windows(n, args.windows, args.rep_ms, args.rounds) for n in args.sizes]
    if "checks" in args.parts and not args.ablate:
        result["checks"] = checks(args.configs)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
