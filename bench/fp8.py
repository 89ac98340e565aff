"""FP8 on the GPU: checks, per-shape GEMM rates, the engine benchmark with an outside baseline, and a profile.

Run on an H100/H200 from the repository root (one process, one machine, so that every ratio is of one run)::

    PYTHONPATH=$PWD python3 bench/fp8.py --parts checks,gemms,bench,profile --out $OUT/fp8

Parts:
    checks   the quantization recipe of ``cuda-fp8`` compiled by Inductor on CUDA equals the reference op
             ``quantize_fp8_per_token`` bit for bit (values and scales; bf16, fp16, fp32 rows); ``cuda-fp8`` on
             onerec-tiny against ``eager-fp8`` and the bf16 model.
    gemms    for each FP8 GEMM shape of onerec-1b (M = the tokens of a batch-32 step and of a batch-1 step):
             bf16 ``mm``, ``torch._scaled_mm`` alone (row-wise scales, bf16 out, fast accumulation) and recfx's
             lowered linear (per-token quantization + GEMM, compiled), in TFLOP/s.
    bench    ``recfx bench`` rows (``run_bench``) of eager, inductor, cuda-fp8 and the outside baseline a user would
             pick today: torchao's ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())`` with
             ``torch.compile`` (benchmark-only backend ``torchao-fp8``, registered here; torchao is not a
             dependency of recfx).
    attention  onerec-1b's cross-attention, K/V repeated over the query heads vs folded GQA, under each SDPA kernel.
    profile  ``torch.profiler`` of one onerec-1b call on inductor (bf16) and cuda-fp8: GPU time by kernel class,
             each FP8 GEMM shape's rate next to ``_scaled_mm`` alone, and the time the quantization adds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

import recfx
from recfx.backends import Availability, Backend, register_backend
from recfx.backends.fp8 import CudaFp8Backend
from recfx.backends.inductor import InductorBackend
from recfx.bench import BenchConfig, run_bench
from recfx.bench.export import write_outputs
from recfx.bench.profile import profile_call
from recfx.models import get_model
from recfx.ops.fp8 import per_token_quantize, quantize_weight
from recfx.ops.fp8_rows import EAGER, quantize_per_token

log = logging.getLogger("bench.fp8")
PARTS = ("checks", "gemms", "attention", "bench", "profile")
#: torchao's baseline compiles these modules (the whole request did not finish compiling in 9 minutes).
TORCHAO_COMPILED = ("LazyDecoderBlock", "ContextProcessor")


# ---------------------------------------------------------------------------------------------------- baseline
@register_backend("torchao-fp8")
class TorchaoFp8(Backend):
    """Benchmark-only: the original model through torchao's dynamic row-wise FP8 and ``torch.compile``.

    The same layers as recfx's default policy are quantized (attention and FFN linears of the decoder blocks; not
    the context pathways, routers or heads). ``fp8`` is False because torchao quantizes, not recfx's passes.
    """

    priority = -100
    description = "benchmark only: torchao Float8 dynamic row-wise (PerRow) + torch.compile of the decoder blocks"

    def availability(self) -> Availability:
        try:
            import torchao  # noqa: F401
        except ImportError:
            return Availability(False, "torchao is not installed")
        return Availability(torch.cuda.is_available(), "needs CUDA")

    def passes(self, ctx: Any) -> list[str]:
        return []

    def compile(self, gm: Any, ctx: Any) -> Any:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        model = copy.deepcopy(ctx.model)
        # 16+ block instances x 3 beam-step shapes x the bench's batches: dynamo's default limit of 8 entries per
        # code object would silently run the rest eagerly
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 512)
        torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit,
                                                                4096)

        def quantized(module: torch.nn.Module, fqn: str) -> bool:
            return (isinstance(module, torch.nn.Linear) and fqn.startswith("layers.")
                    and not fqn.endswith("router"))

        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=quantized)
        for module in model.modules():
            if type(module).__name__ in TORCHAO_COMPILED:
                module.compile()
        return model


def _with_options(base: type, options: dict[str, Any], what: str) -> type:
    """``base`` with ``options`` added to its backend options (the user's own win): one side of an A/B."""

    class WithOptions(base):  # type: ignore[misc, valid-type]
        priority = -100
        description = f"benchmark only: {base.__name__} with {what}"

        def compile(self, gm: Any, ctx: Any) -> Any:
            ctx.backend_options = {**options, **ctx.backend_options}
            return super().compile(gm, ctx)

        def heuristics(self, backend_options: dict[str, Any]) -> tuple[int, bool]:  # a bundle is packaged alike
            return super().heuristics({**options, **backend_options})

    return WithOptions


for _base, _name in ((InductorBackend, "inductor"), (CudaFp8Backend, "cuda-fp8")):
    # recfx's persistent-reduction limit vs Inductor's own (1,024)
    register_backend(f"{_name}-rows1024")(_with_options(_base, {"persistent_rows": 0},
                                                        "Inductor's own persistent-reduction limit (1,024)"))
    # repeated blocks compiled once vs flat
    register_backend(f"{_name}-regions")(_with_options(_base, {"regions": True}, "backend option regions=True"))
    register_backend(f"{_name}-flat")(_with_options(_base, {"regions": False}, "backend option regions=False"))
    # whole-row reductions also for rows read through permutes or recomputed (Inductor's DEFAULT hint), or only for
    # contiguous rows (INNER): each backend has its default (cuda-fp8 "any", inductor "contiguous")
    for _suffix, _layout in (("anyrows", "any"), ("contigrows", "contiguous")):
        register_backend(f"{_name}-{_suffix}")(_with_options(_base, {"persistent_layout": _layout},
                                                             f"backend option persistent_layout={_layout!r}"))

    # Inductor's GEMM autotuning: cuBLAS against its Triton templates per shape, chosen by measurement and cached;
    # a Triton template that wins can take the following pointwise ops (a residual add) into its epilogue
    register_backend(f"{_name}-autotune")(_with_options(_base, {"mode": "max-autotune-no-cudagraphs"},
                                                        "torch.compile mode max-autotune-no-cudagraphs"))


@register_backend("cuda-fp8-attn")
class CudaFp8Attention(CudaFp8Backend):
    """``cuda-fp8`` with its opt-in FP8 attention (``backend_options={"fp8_attention": True}``)."""

    priority = -100
    description = "benchmark only: cuda-fp8 with backend_options fp8_attention=True (FP8 attention products)"

    def passes(self, ctx: Any) -> list[str]:
        ctx.backend_options = {"fp8_attention": True, **ctx.backend_options}
        return super().passes(ctx)


@register_backend("cuda-fp8-off")
class CudaFp8Off(CudaFp8Backend):
    """``cuda-fp8`` without the pass options it turns on by default (``realize_permuted``, ``silu_quant_kernel``):
    the other side of their A/B (what ``cuda-fp8`` ran before BENCHMARKS.md run 11)."""

    priority = -100
    description = "benchmark only: cuda-fp8 with realize_permuted=False and silu_quant_kernel=False"
    pass_defaults = MappingProxyType(dict.fromkeys(CudaFp8Backend.pass_defaults, False))


@register_backend("cuda-fp8-v2")
class CudaFp8OneRecV2(CudaFp8Backend):
    """``cuda-fp8`` with ``QuantConfig.onerec_v2()`` (MoE experts in 1 x 128 / 128 x 128 blocks, on the grouped
    ``recfx::fp8_block_mm``), unless the bench was given a quant config."""

    priority = -100
    description = "benchmark only: cuda-fp8 with the OneRec-V2 recipe (block-scaled MoE experts)"

    def passes(self, ctx: Any) -> list[str]:
        if ctx.quant is None:
            ctx.quant = recfx.QuantConfig.onerec_v2()
        return super().passes(ctx)


# ---------------------------------------------------------------------------------------------------- checks
def part_checks(out: dict[str, Any]) -> None:
    torch.manual_seed(0)
    results = []
    fn = torch.compile(lambda t: quantize_per_token(EAGER, t), dynamic=True)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = (torch.randn(4096, 2048, device="cuda") * torch.logspace(-4, 4, 4096, device="cuda")[:, None]).to(dtype)
        q_ref, s_ref = per_token_quantize(x)
        q, s = fn(x)
        naive = (x.float() / s_ref).clamp(-448, 448).to(torch.float8_e4m3fn)
        results.append({
            "dtype": str(dtype), "scales_equal": bool(torch.equal(s, s_ref)),
            "values_equal": bool(torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))),
            "naive_float32_mismatches": int((naive.view(torch.uint8) != q_ref.view(torch.uint8)).sum())})
    out["quantization_bit_exact"] = results
    spec = get_model("onerec-tiny")
    model = spec.build().to("cuda", torch.bfloat16)
    inputs = spec.example_inputs(4, device="cuda", dtype=torch.bfloat16)
    ref = recfx.compile(model, inputs, backend="eager-fp8")
    fast = recfx.compile(model, inputs, backend="cuda-fp8")
    fresh = spec.example_inputs(8, seed=3, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        (_, s_bf16), (_, s_ref), (_, s_fast) = model(*fresh), ref(*fresh), fast(*fresh)  # batch 8: captured
        replayed = fast(*fresh)[1]
        other = spec.example_inputs(5, seed=4, device="cuda", dtype=torch.bfloat16)  # batch 5: uncaptured
        uncaptured = fast(*other)[1]
        ref_other = ref(*other)[1]
    cos = torch.nn.functional.cosine_similarity
    out["onerec_tiny"] = {
        "cosine_fast_vs_eager_fp8": float(cos(s_fast.double().flatten(), s_ref.double().flatten(), dim=0)),
        "cosine_fast_vs_bf16": float(cos(s_fast.double().flatten(), s_bf16.double().flatten(), dim=0)),
        "replay_equals_first_call": bool(torch.equal(replayed, s_fast)),
        "cosine_uncaptured_vs_eager_fp8": float(cos(uncaptured.double().flatten(), ref_other.double().flatten(),
                                                    dim=0)),
        "cuda_graphs": fast.report.sections["cuda_graphs"].render(),
        "report": fast.report.sections["fp8_gemm"].to_dict()}
    log.info("checks: %s", json.dumps(out, default=str)[:2000])


# ---------------------------------------------------------------------------------------------------- gemms
def onerec_gemm_shapes(name: str = "onerec-1b") -> list[tuple[str, int, int]]:
    """(layer kinds, K, N) of the model's quantized GEMMs."""
    c = get_model(name).config
    inner = c.n_heads * c.d_head
    return [("cross/self q, self k/v", c.d_model, inner), ("o_proj", inner, c.d_model),
            ("gate/up", c.d_model, c.d_ff), ("down", c.d_ff, c.d_model)]


def _ms(fn: Any) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def part_gemms(out: dict[str, Any], tokens: tuple[int, ...]) -> None:
    rows = []
    lowered_cache: dict[tuple[int, int], Any] = {}
    for m in tokens:
        for kinds, k, n in onerec_gemm_shapes():
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
            w_q, w_s = quantize_weight(w)
            w_t, s_w = w_q.t(), w_s.reshape(1, n).contiguous()
            q, s_x = per_token_quantize(x)
            flop = 2.0 * m * k * n
            if (k, n) not in lowered_cache:
                lin = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)).to("cuda", torch.bfloat16).eval()
                lin[0].weight.data.copy_(w)
                lowered_cache[(k, n)] = recfx.compile(lin, (x[:64],), backend="cuda-fp8",
                                                      config=recfx.CompileConfig(check_numerics=False, passes=()),
                                                      quant=recfx.QuantConfig(default_exclusions=False))
            lowered = lowered_cache[(k, n)]
            times = {
                "bf16_mm": _ms(lambda: x @ w.t()),
                "scaled_mm": _ms(lambda: torch._scaled_mm(q, w_t, s_x, s_w, out_dtype=torch.bfloat16,
                                                          use_fast_accum=True)),
                "scaled_mm_exact_accum": _ms(lambda: torch._scaled_mm(q, w_t, s_x, s_w, out_dtype=torch.bfloat16)),
                "recfx_lowered_linear": _ms(lambda: lowered(x)),
            }
            row = {"M": m, "K": k, "N": n, "layers": kinds, **{f"{key}_ms": v for key, v in times.items()},
                   **{f"{key}_tflops": flop / v / 1e9 for key, v in times.items()}}
            rows.append(row)
            log.info("gemm M=%d K=%d N=%d: %s", m, k, n, {key: round(flop / v / 1e9) for key, v in times.items()})
    out["gemms"] = rows


# ---------------------------------------------------------------------------------------------------- attention
def part_attention(out: dict[str, Any], batch: int) -> None:
    """onerec-1b's cross-attention at ``batch``: K/V repeated over the query heads (as written) vs folded GQA
    (``fold_gqa_attention``), under each SDPA kernel, in ms and TFLOP/s."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    cfg = get_model("onerec-1b").config
    h, g, d, t = cfg.n_heads, cfg.kv_groups, cfg.d_head, cfg.context_tokens
    r = h // g
    rows = []
    for n in (cfg.beam * 2, cfg.beam * 3):  # the query rows of beam steps 2 and 3
        q = torch.randn(batch, n, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # (B, H, N, D) view
        k = torch.randn(batch, t, g, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        k_rep = k[:, :, :, None].expand(batch, t, g, r, d).reshape(batch, t, h, d).transpose(1, 2)
        v_rep = v[:, :, :, None].expand(batch, t, g, r, d).reshape(batch, t, h, d).transpose(1, 2)
        q_fold = q.unflatten(1, (g, r)).flatten(2, 3)  # (B, G, r*N, D)
        k_g, v_g = k.transpose(1, 2), v.transpose(1, 2)
        flop = 4.0 * batch * h * n * t * d
        want = sdpa(q.float(), k_rep.float(), v_rep.float())
        for name, backend in (("default", None), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            for form, fn in (("repeated", lambda: sdpa(q, k_rep, v_rep)),
                             ("folded", lambda: sdpa(q_fold, k_g, v_g).unflatten(2, (r, n)).flatten(1, 2))):
                row: dict[str, Any] = {"N": n, "T": t, "batch": batch, "kernel": name, "form": form}
                try:
                    if backend is None:
                        got, ms = fn(), _ms(fn)
                    else:
                        with sdpa_kernel([backend]):
                            got, ms = fn(), _ms(fn)
                    row.update(ms=ms, tflops=flop / ms / 1e9,
                               max_err=float((got.float() - want).abs().max()))
                except RuntimeError as err:  # a kernel that does not take this shape
                    row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
                rows.append(row)
                log.info("attention %s", row)
    out["attention"] = rows


# ---------------------------------------------------------------------------------------------------- profile
def part_profile(out: dict[str, Any], batch: int, model_name: str = "onerec-1b") -> None:
    spec = get_model(model_name)
    model = spec.build().to("cuda", torch.bfloat16)
    inputs = spec.example_inputs(batch, device="cuda", dtype=torch.bfloat16)
    example = spec.example_inputs(2, device="cuda", dtype=torch.bfloat16)
    result = {}
    for backend in ("inductor", "cuda-fp8"):
        t0 = time.perf_counter()
        compiled = recfx.compile(model, example, backend=backend, config=recfx.CompileConfig(check_numerics=False))
        compile_s = time.perf_counter() - t0
        result[backend] = {"compile_s": compile_s, **profile_call(lambda c=compiled: c(*inputs))}
        log.info("profile %s: %s", backend, json.dumps(result[backend]["classes"]))
        del compiled
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    out["profile"] = {"batch": batch, **result}


# ---------------------------------------------------------------------------------------------------- bench
def part_bench(out: dict[str, Any], args: argparse.Namespace, folder: Path) -> None:
    """``run_bench`` one backend at a time, writing the merged result after each (a time limit keeps what ran)."""
    merged = None
    for backend in args.backends.split(","):
        config = BenchConfig(args.model, backends=(backend,), batches=tuple(int(b) for b in args.batches.split(",")),
                             iters=50, warmup=2, time_budget=args.time_budget, cuda_graphs=args.cuda_graphs,
                             profile=args.bench_profile)
        result = run_bench(config)
        if merged is None:
            merged = result
            merged.config["backends"] = [backend]
        else:
            merged.rows += result.rows
            merged.config["backends"].append(backend)
        write_outputs(merged, folder)
        out["bench_backends_done"] = list(merged.config["backends"])
        log.info("bench: %s done", backend)
        torch._dynamo.reset()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="checks,gemms,bench,profile", help=f"comma list of {PARTS}")
    parser.add_argument("--out", required=True, help="folder for fp8.json, the bench outputs and the log")
    parser.add_argument("--model", default="onerec-1b")
    parser.add_argument("--backends", default="eager,inductor,cuda-fp8,torchao-fp8")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--time-budget", type=float, default=0.5)
    parser.add_argument("--cuda-graphs", default="auto")
    parser.add_argument("--gemm-tokens", default="49152,1536")
    parser.add_argument("--profile-batch", type=int, default=32)
    parser.add_argument("--bench-profile", action="store_true",
                        help="part bench also profiles each backend's largest batch (recfx bench --profile)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    if not torch.cuda.is_available():
        parser.error("bench/fp8.py measures the GPU path: no CUDA GPU is visible")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout), logging.FileHandler(folder / "fp8.log")])
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv}
    path = folder / "fp8.json"

    def save() -> None:
        path.write_text(json.dumps(out, indent=1, default=str))

    for part in parts:
        t0 = time.perf_counter()
        try:
            if part == "checks":
                part_checks(out)
            elif part == "gemms":
                part_gemms(out, tuple(int(t) for t in args.gemm_tokens.split(",")))
            elif part == "attention":
                part_attention(out, args.profile_batch)
            elif part == "bench":
                part_bench(out, args, folder / args.model)
            elif part == "profile":
                part_profile(out, args.profile_batch, args.model)
        except Exception as err:  # one failing part does not lose the others' results
            log.exception("part %s failed", part)
            out.setdefault("failed", {})[part] = f"{type(err).__name__}: {err}"
        out.setdefault("seconds", {})[part] = time.perf_counter() - t0
        save()
    return 1 if out.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
