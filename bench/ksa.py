"""GPU benchmark of Kwai Summary Attention: recfx's kernels vs FlexAttention and SDPA, in one run.

    PYTHONPATH=$PWD python3 bench/ksa.py --out $OUT/ksa.json

Prefill (B=1, bf16, interleaved [B, L, H, D]): (a) ``recfx::ksa_attention`` (Triton), (b) compiled FlexAttention
with a BlockMask of the same mask, summary keys gathered into a dense prefix and in the plain interleaved form,
(c) SDPA causal over the text only. Useful TFLOP/s count only allowed (query, key) pairs: 4 * D * pairs * H.
Decode: one text token attending over the KSA cache at a long context vs a full-attention cache.
Correctness first: every variant is checked against a float64 reference (all rows at small sizes, sampled rows
at large ones) before it is timed. ``--parts sweep`` times every block shape with TMA loads on and off at
``--sweep-sizes`` (kernel design A/B, SDPA timed in the same run).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from recfx.kernels import ksa_dense
from recfx.kernels import ksa_prefill as prefill_mod
from recfx.kernels.ksa_reference import count_allowed_pairs, prefill_reference, split_length
from recfx.models.ksa_mask import interleaved_length, ksa_visibility

OP = torch.ops.recfx.ksa_attention
#: bf16 tolerance: relative Frobenius error of the output vs float64, and |lse - lse_ref|
BF16_REL_TOL = 1e-2
LSE_ATOL = 2e-2


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def timed(fn: Any, rep_ms: int) -> float:
    fn()
    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def graph_timed(fn: Any, rep_ms: int) -> float:
    """Median time of replaying ``fn`` captured in a CUDA graph (no launch gaps: what a serving loop sees)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timed(graph.replay, rep_ms)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- correctness
def small_checks(device: str) -> list[dict[str, Any]]:
    """Full-output checks of the kernel vs float64, over GQA, S, W, dtypes, odd lengths, batch 2: through the op
    (prefix chosen automatically) and with the dense summary prefix forced wherever it can run."""
    cases = [  # (B, L, k, S, W, H, Hkv, D, dtype)
        (1, 1000, 8, 1, 4, 8, 2, 128, torch.bfloat16), (1, 777, 4, 2, 0, 4, 1, 64, torch.float16),
        (1, 2049, 8, 1, 128, 16, 16, 128, torch.bfloat16), (1, 513, 3, 2, 3, 8, 2, 128, torch.bfloat16),
        (1, 4608, 8, 1, 128, 16, 16, 128, torch.bfloat16), (1, 300, 8, 1, 1, 4, 4, 96, torch.bfloat16),
        (2, 1203, 8, 1, 2, 8, 4, 128, torch.float16),
    ]
    rows = []
    for b, length, k, s, w, h, hkv, d, dtype in cases:
        q = torch.randn(b, length, h, d, device=device, dtype=dtype)
        kk, v = (torch.randn(b, length, hkv, d, device=device, dtype=dtype) for _ in range(2))
        ref, ref_lse = prefill_reference(q.double(), kk.double(), v.double(), k, s, w, d**-0.5)
        n_text, _ = split_length(length, k, s)
        prefixes = ["auto"]
        if ksa_dense.dense_prefix_runs(q, s) and ksa_dense.dense_prefix_chunks(n_text, k, min(w, n_text // k + 1)):
            prefixes.append("dense")
        for prefix in prefixes:
            if prefix == "auto":
                out, lse = OP(q, kk, v, k, s, w, d**-0.5)
            else:
                out, lse = prefill_mod.ksa_prefill(q, kk, v, k, s, w, d**-0.5, prefix="dense")
            row = {"B": b, "L": length, "k": k, "S": s, "W": w, "H": h, "Hkv": hkv, "D": d, "prefix": prefix,
                   "dtype": str(dtype).removeprefix("torch."), "rel_err": rel_err(out, ref),
                   "lse_max_abs": (lse.double() - ref_lse).abs().max().item(),
                   "finite": bool(torch.isfinite(out).all() and torch.isfinite(lse).all())}
            row["ok"] = row["finite"] and row["rel_err"] < BF16_REL_TOL and row["lse_max_abs"] < LSE_ATOL
            rows.append(row)
            log(f"check {row}")
    return rows


def sampled_rows(length: int, device: str, count: int = 192) -> torch.Tensor:
    g = torch.Generator().manual_seed(length)
    rows = torch.cat([torch.randint(0, length, (count,), generator=g), torch.arange(length - 64, length)])
    return rows.unique().to(device)


# ---------------------------------------------------------------------------------------------- prefill
def flex_mask_mods(chunk: int, summaries: int, window: int, prefix: int) -> tuple[Any, Any]:
    """FlexAttention mask_mods: the interleaved form, and keys = [P summaries in time order | interleaved]."""
    block = chunk + summaries

    def interleaved(b, h, q_idx, kv_idx):  # type: ignore[no-untyped-def]
        return ksa_visibility(q_idx, kv_idx, chunk, summaries, window)

    def with_prefix(b, h, q_idx, kv_idx):  # type: ignore[no-untyped-def]
        qc, q_sum = q_idx // block, q_idx % block >= chunk
        old_summary = ~q_sum & (qc - kv_idx // summaries > window)  # kv_idx < P: summary number kv_idx
        j = kv_idx - prefix  # kv_idx >= P: interleaved position j
        kc, k_sum, causal = j // block, j % block >= chunk, j <= q_idx
        near = (q_sum & (kc == qc) & causal) | (~q_sum & ~k_sum & causal & (qc - kc <= window))
        return torch.where(kv_idx < prefix, old_summary, near)

    return interleaved, with_prefix


def flex_variants(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int, summaries: int, window: int,
                  scale: float) -> dict[str, Any]:
    """Compiled FlexAttention callables for the interleaved form and the dense-summary-prefix form."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    length = q.shape[1]
    pos = torch.arange(length, device=q.device)
    summary_pos = pos[pos % (chunk + summaries) >= chunk]
    prefix = summary_pos.numel()
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # (B, H, L, D)
    kp, vp = (torch.cat([x[:, :, summary_pos], x], dim=2) for x in (kt, vt))  # (B, H, P + L, D)
    interleaved, with_prefix = flex_mask_mods(chunk, summaries, window, prefix)

    def make(mod: Any, kv_len: int) -> Any:
        try:
            return create_block_mask(mod, None, None, length, kv_len, device=q.device, _compile=True)
        except TypeError:
            return create_block_mask(mod, None, None, length, kv_len, device=q.device)

    t0 = time.perf_counter()
    bm_inter, bm_prefix = make(interleaved, length), make(with_prefix, prefix + length)
    mask_s = time.perf_counter() - t0
    return {
        "flex_interleaved": lambda: flex(qt, kt, vt, block_mask=bm_inter, scale=scale),
        "flex_prefix": lambda: flex(qt, kp, vp, block_mask=bm_prefix, scale=scale),
        "block_mask_seconds": mask_s,
    }


def prefill_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in args.sizes:
        results.append(prefill_one(n, args))
        torch.cuda.empty_cache()
    return results


def prefill_one(n: int, args: argparse.Namespace) -> dict[str, Any]:
    h, d, k, s, w = args.heads, args.head_dim, args.chunk, args.summaries, args.window
    scale = d**-0.5
    torch.manual_seed(n)
    length = interleaved_length(n, k, s)
    q, kk, v = (torch.randn(1, length, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    pairs, causal_pairs = count_allowed_pairs(length, k, s, w), n * (n + 1) // 2
    row: dict[str, Any] = {"n": n, "L": length, "pairs": pairs, "causal_pairs": causal_pairs,
                           "ideal_ratio": causal_pairs / pairs}
    # correctness on sampled rows, for every variant
    rows = sampled_rows(length, "cuda")
    ref, ref_lse = prefill_reference(q.double(), kk.double(), v.double(), k, s, w, scale, rows=rows)
    prefill_mod._ksa_prefill_kernel.configs_timings = None  # else a cached shape would report an older tune
    out, lse = OP(q, kk, v, k, s, w, scale)
    row["recfx_rel_err"] = rel_err(out[:, rows], ref)
    row["recfx_lse_max_abs"] = (lse[:, :, rows].double() - ref_lse).abs().max().item()
    row["recfx_finite"] = bool(torch.isfinite(out).all() and torch.isfinite(lse).all())
    row["recfx_prefix"] = "dense" if prefill_mod.chooses_dense_prefix(q, kk, v, k, s, w) else "kernel"

    def kernel_only() -> Any:
        return prefill_mod.ksa_prefill(q, kk, v, k, s, w, scale, prefix="kernel")

    row["recfx_kernel_only_rel_err"] = rel_err(kernel_only()[0][:, rows], ref)
    fns: dict[str, Any] = {"recfx": lambda: OP(q, kk, v, k, s, w, scale), "recfx_kernel_only": kernel_only}
    if row["recfx_prefix"] == "dense":  # the cuDNN part alone (its share of the time)
        fns["recfx_dense_part"] = lambda: ksa_dense.dense_prefix(q, kk, v, k, w, scale)
    if not args.skip_flex:
        fv = flex_variants(q, kk, v, k, s, w, scale)
        row["block_mask_seconds"] = fv.pop("block_mask_seconds")
        for name, fn in fv.items():
            row[f"{name}_rel_err"] = rel_err(fn().transpose(1, 2)[:, rows], ref)
        fns.update(fv)
    del ref, ref_lse
    qt, kt, vt = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fns["sdpa_causal_text"] = lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    # rounds over all variants, median per variant: clock and thermal drift during the run hit every variant alike
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, args.rep_ms))
    for name in fns:
        ms = statistics.median(times[name])
        row[f"{name}_ms"] = ms
        row[f"{name}_ms_rounds"] = times[name]
        if name == "recfx_dense_part":
            continue
        flop_pairs = causal_pairs if name.startswith("sdpa") else pairs
        row[f"{name}_useful_tflops"] = 4 * d * flop_pairs * h / (ms * 1e-3) / 1e12
    row["recfx_config"] = str(getattr(prefill_mod._ksa_prefill_kernel, "best_config", None))
    timings = getattr(prefill_mod._ksa_prefill_kernel, "configs_timings", None) or {}
    row["recfx_config_timings"] = {str(c): (t[0] if isinstance(t, list) else t) for c, t in timings.items()}
    row["recfx_graph_ms"] = graph_timed(lambda: OP(q, kk, v, k, s, w, scale), args.rep_ms)  # no host overhead
    row["speedup_vs_sdpa"] = row["sdpa_causal_text_ms"] / row["recfx_ms"]
    row["kernel_only_fraction_of_ideal"] = row["sdpa_causal_text_ms"] / row["recfx_kernel_only_ms"] / row["ideal_ratio"]
    row["fraction_of_ideal"] = row["speedup_vs_sdpa"] / row["ideal_ratio"]
    if "flex_prefix_ms" in row:
        row["speedup_vs_flex_prefix"] = row["flex_prefix_ms"] / row["recfx_ms"]
        row["speedup_vs_flex_interleaved"] = row["flex_interleaved_ms"] / row["recfx_ms"]
    log(f"prefill {json.dumps(row)}")
    return row


# ---------------------------------------------------------------------------------------------- sweep
SWEEP_SHAPES = [(64, 64, 4, 3), (64, 64, 4, 2), (128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3),
                (128, 64, 8, 2)]
#: (tma, prefix) variants of every shape
SWEEP_VARIANTS = [(False, "kernel"), (True, "kernel"), (True, "dense")]


def sweep_shape(text: str) -> tuple[Any, ...]:
    """``bm,bn,warps,stages[,KNOB=int...]`` -> (bm, bn, warps, stages, (KNOB, int)...): extra constexprs of the
    kernel at hand (experiment switches; commits d585e44 and 2178c28 had PIPE, LOWTMA, DIAGTMA, EXP16, ABL, PAIRS)."""
    parts = text.split(",")
    try:
        knobs = tuple((k, int(v)) for k, v in (x.split("=") for x in parts[4:]))
        shape = tuple(int(x) for x in parts[:4])
    except ValueError:
        shape, knobs = (), ()
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f"--sweep-shapes wants BLOCK_M,BLOCK_N,warps,stages[,KNOB=int...], got "
                                         f"{text!r}")
    return (*shape, *knobs)


def sweep_variant(text: str) -> tuple[bool, str]:
    """``tma|ptr:kernel|dense`` -> (tma, prefix)."""
    loads, _, prefix = text.partition(":")
    if loads not in ("tma", "ptr") or prefix not in ("kernel", "dense"):
        raise argparse.ArgumentTypeError(f"--sweep-variants wants tma|ptr:kernel|dense, got {text!r}")
    return loads == "tma", prefix


def sweep_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (block shape, TMA) variant of the prefill kernel at --sweep-sizes, each checked
    on sampled rows and timed beside SDPA causal in the same run (A/B of kernel designs)."""
    results = []
    for n in args.sweep_sizes:
        results += sweep_one(n, args)
        torch.cuda.empty_cache()
    return results


def sweep_one(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    h, d, k, s, w = args.heads, args.head_dim, args.chunk, args.summaries, args.window
    torch.manual_seed(n)
    length = interleaved_length(n, k, s)
    q, kk, v = (torch.randn(1, length, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    rows = sampled_rows(length, "cuda")
    ref, _ = prefill_reference(q.double(), kk.double(), v.double(), k, s, w, d**-0.5, rows=rows)
    qt, kt, vt = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    sdpa_ms = timed(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True), args.rep_ms)
    ideal = (n * (n + 1) // 2) / count_allowed_pairs(length, k, s, w)
    results = []
    shapes = args.sweep_shapes or SWEEP_SHAPES
    variants = args.sweep_variants or SWEEP_VARIANTS
    for bm, bn, warps, stages, *knobs in shapes:
        for tma, prefix in variants:
            config = {"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_LOOPS": False, "num_warps": warps, "num_stages": stages,
                      **dict(knobs)}
            row: dict[str, Any] = {"n": n, **config, "tma": tma, "prefix": prefix, "sdpa_ms": sdpa_ms,
                                   "ideal_ratio": ideal}

            def run(config: dict[str, Any] = config, tma: bool = tma, prefix: str = prefix) -> Any:
                return prefill_mod.ksa_prefill(q, kk, v, k, s, w, d**-0.5, config=config, tma=tma, prefix=prefix)

            try:
                row["rel_err"] = rel_err(run()[0][:, rows], ref)
                row["ms"] = timed(run, args.rep_ms)
                row["fraction_of_ideal"] = sdpa_ms / row["ms"] / ideal
            except Exception as err:  # noqa: BLE001 - a variant that does not compile is a result too
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            log(f"sweep {json.dumps(row)}")
            results.append(row)
    return results


# ---------------------------------------------------------------------------------------------- decode
def decode_section(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One KSA layer decoding one text token at ``--decode-context`` text tokens of context vs a full cache."""
    from recfx.kernels.ksa_decode import decode_attention
    from recfx.models.ksa_cache import (
        KSACacheLayout,
        KSALayerCache,
        TextKVCache,
        full_cache_bytes,
        ksa_cache_bytes,
    )

    h, d, k, s, w, n = args.heads, args.head_dim, args.chunk, args.summaries, args.window, args.decode_context
    n -= n % k  # the prompt ends with a complete chunk and its summaries; the new token starts a chunk
    scale = d**-0.5
    dtype = torch.bfloat16
    torch.manual_seed(1)
    length = interleaved_length(n, k, s)
    q, kk, v = (torch.randn(1, length + 1, h, d, device="cuda", dtype=dtype) for _ in range(3))
    cache = KSALayerCache(KSACacheLayout(k, s, w, n + k), 1, h, d, dtype, "cuda")
    cache.load_prefix(kk[:, :length], v[:, :length])
    full = TextKVCache(n + 1, k, s, 1, h, d, dtype, "cuda")
    full.load_prefix(kk[:, :length], v[:, :length])
    lo, hi = cache.append_text(kk[:, length], v[:, length])
    out = decode_attention(q[:, length], cache.k[:, lo:hi], cache.v[:, lo:hi], scale)
    ref, _ = prefill_reference(q.double(), kk.double(), v.double(), k, s, w, scale,
                               rows=torch.tensor([length], device="cuda"))
    row: dict[str, Any] = {"context": n, "L": length, "visible_keys": hi - lo, "rel_err": rel_err(out, ref[:, 0])}
    op_out, _ = OP(q, kk, v, k, s, w, scale)  # the prefill kernel's last row is the same query
    row["rel_err_vs_prefill_kernel"] = rel_err(out, op_out[:, length])

    def ksa_step() -> torch.Tensor:  # append + attention at the same position, step after step
        cache.n -= 1
        a, b = cache.append_text(kk[:, length], v[:, length])
        return decode_attention(q[:, length], cache.k[:, a:b], cache.v[:, a:b], scale)

    full_q = q[:, length]
    fk, fv = full.k[:, : n + 1], full.v[:, : n + 1]
    sdpa_q, sdpa_k, sdpa_v = full_q[:, :, None], fk.transpose(1, 2), fv.transpose(1, 2)
    variants = {
        "ksa_attn": lambda: decode_attention(full_q, cache.k[:, lo:hi], cache.v[:, lo:hi], scale),
        "ksa_step": ksa_step,
        "full_attn": lambda: decode_attention(full_q, fk, fv, scale),
        "full_sdpa": lambda: F.scaled_dot_product_attention(sdpa_q, sdpa_k, sdpa_v),
    }
    for name, fn in variants.items():
        row[f"{name}_ms"] = timed(fn, args.rep_ms)  # eager: includes launch gaps
        row[f"{name}_graph_ms"] = graph_timed(fn, args.rep_ms)  # CUDA graph replay: the GPU time
        row[f"{name}_tokens_per_s"] = 1e3 / row[f"{name}_graph_ms"]
    row["ksa_cache_bytes"] = ksa_cache_bytes(n, k, s, w, h, d, dtype)
    row["ksa_cache_bytes_allocated"] = cache.nbytes
    row["full_cache_bytes"] = full_cache_bytes(n, h, d, dtype)
    row["cache_ratio"] = row["full_cache_bytes"] / row["ksa_cache_bytes"]
    row["ksa_visible_bytes_per_step"] = (hi - lo) * 2 * h * d * dtype.itemsize
    row["ksa_attn_tb_s"] = row["ksa_visible_bytes_per_step"] / (row["ksa_attn_graph_ms"] * 1e-3) / 1e12
    row["full_attn_tb_s"] = row["full_cache_bytes"] / (row["full_attn_graph_ms"] * 1e-3) / 1e12
    row["step_speedup_vs_full_attn"] = row["full_attn_graph_ms"] / row["ksa_step_graph_ms"]
    row["step_speedup_vs_full_sdpa"] = row["full_sdpa_graph_ms"] / row["ksa_step_graph_ms"]
    row["ok"] = row["rel_err"] < BF16_REL_TOL and bool(torch.isfinite(out).all())
    log(f"decode {json.dumps(row)}")
    return [row]


# ---------------------------------------------------------------------------------------------- model
def model_section(args: argparse.Namespace) -> dict[str, Any]:
    """ksa-tiny in bf16 on the GPU: recfx.compile (eager and inductor run the fused op), and generate()."""
    import recfx
    from recfx.models import KSAModel, get_model
    from recfx.models.ksa_generate import KSADecoder

    spec = get_model("ksa-tiny")
    model = spec.build(dtype=torch.bfloat16, device="cuda")
    ref_model = spec.build(dtype=torch.float32, device="cuda")
    x = spec.example_inputs(2, seq=512, device="cuda")
    with torch.no_grad():
        ref = ref_model(*x).double()
        bf16_err = rel_err(model(*x), ref)
    out: dict[str, Any] = {}
    for backend in ("eager", "inductor"):
        t0 = time.perf_counter()
        cm = recfx.compile(model, x, backend=backend)
        with torch.no_grad():
            got = cm(*x)
        fused = sum(n.target is torch.ops.recfx.ksa_attention.default for n in cm.graph_module.graph.nodes)
        out[backend] = {"ksa_ops": fused, "rel_err_vs_fp32_model": rel_err(got, ref),
                        "model_bf16_rel_err_vs_fp32": bf16_err, "seconds": time.perf_counter() - t0,
                        "ms": timed(lambda cm=cm: cm(*x), args.rep_ms)}
        log(f"model {backend} {out[backend]}")
    prompt, steps = torch.randint(0, spec.config.vocab, (2, 101), device="cuda"), 40
    tokens = torch.cat([prompt, torch.randint(0, spec.config.vocab, (2, steps), device="cuda")], dim=1)
    assert isinstance(model, KSAModel)
    dec = KSADecoder(model, 2, prompt.shape[1] + steps)
    logits = [dec.prefill(prompt)] + [dec.step(tokens[:, prompt.shape[1] + i]) for i in range(steps - 1)]
    errs, agree = [], []
    with torch.no_grad():
        for i, lg in enumerate(logits):
            want = model(tokens[:, : prompt.shape[1] + i])[:, -1]
            errs.append(rel_err(lg, want))
            agree.append(float((lg.argmax(-1) == want.argmax(-1)).float().mean()))
    out["generate"] = {"steps": steps, "max_rel_err_vs_recompute": max(errs),
                       "argmax_agreement": sum(agree) / len(agree)}
    log(f"model generate {out['generate']}")
    return out


def print_table(prefill: list[dict[str, Any]]) -> None:
    cols = ["n", "recfx_prefix", "recfx_ms", "recfx_kernel_only_ms", "recfx_graph_ms", "flex_prefix_ms",
            "flex_interleaved_ms", "sdpa_causal_text_ms", "recfx_useful_tflops", "speedup_vs_flex_prefix",
            "speedup_vs_sdpa", "ideal_ratio", "fraction_of_ideal", "recfx_rel_err"]
    print(" | ".join(cols))
    for r in prefill:
        print(" | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 16384, 32768, 65536])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--summaries", type=int, default=1)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--rep-ms", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="prefill: timing rounds over all variants (median)")
    p.add_argument("--skip-flex", action="store_true")
    p.add_argument("--parts", default="checks,decode,prefill,model", help="any of checks,decode,prefill,model,sweep")
    p.add_argument("--sweep-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[32768, 65536])
    p.add_argument("--sweep-shapes", type=lambda s: [sweep_shape(c) for c in s.split(";")],
                   help="BLOCK_M,BLOCK_N,warps,stages[,KNOB=int...];... (default: SWEEP_SHAPES); knobs are extra "
                        "constexprs of the kernel (experiment switches)")
    p.add_argument("--sweep-variants",
                   type=lambda s: [sweep_variant(c) for c in s.split(",")],
                   help="tma|ptr:kernel|dense,... (default: SWEEP_VARIANTS)")
    p.add_argument("--decode-context", type=int, default=131072)
    p.add_argument("--out", default="ksa_bench.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench/ksa.py needs a CUDA GPU", file=sys.stderr)
        return 2
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "argv": sys.argv, "config": vars(args),
    }
    t0 = time.perf_counter()
    sections = {"sweep": lambda: sweep_section(args),
                "checks": lambda: small_checks("cuda"), "decode": lambda: decode_section(args),
                "prefill": lambda: prefill_section(args), "model": lambda: model_section(args)}
    for name, run in sections.items():
        if name in parts:
            log(f"section {name}")
            result[name] = run()
            result["seconds"] = time.perf_counter() - t0
            with open(args.out, "w") as f:  # after every section: a run cut short keeps what it measured
                json.dump(result, f, indent=1)
    if "prefill" in result:
        print_table(result["prefill"])
    ok = all(c["ok"] for c in result.get("checks", [])) and all(
        r["recfx_finite"] and r["recfx_rel_err"] < BF16_REL_TOL for r in result.get("prefill", [])) and all(
        r["ok"] for r in result.get("decode", [])) and all(
        m["ksa_ops"] == 3 for b, m in result.get("model", {}).items() if b != "generate")
    print(f"correct: {ok}; {result['seconds']:.0f} s; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
