"""Probe: the block-scaled FP8 GEMM kernel (``recfx::fp8_block_mm``) against row-wise ``torch._scaled_mm`` and bf16.

Dense shapes of onerec-1b's decoder (M tokens x K -> N) and the grouped shape of onerec-moe's experts (53 experts,
3 routed per token plus a shared one, d 1536, hidden 1152): accuracy against a float64 GEMM of the dequantized
operands (cosine), then time (``triton.testing.do_bench``, median ms) and TFLOP/s of each variant on the same
operands. Timing only within this run.

    PYTHONPATH=$PWD python3 bench/probes/block_gemm.py out.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import recfx  # noqa: F401  (defines the ops)
from recfx.ops.fp8 import quantize_weight
from recfx.ops.fp8_block_mm import quantize_groups
from recfx.ops.fp8_rows import quantize_per_token
from recfx.ops.fp8_terms import EAGER

ops = torch.ops.recfx
BLOCK = 128


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _deq(q: torch.Tensor, s: torch.Tensor, rows: int) -> torch.Tensor:
    k = q.shape[-1]
    return q.double() * s.double().repeat_interleave(rows, -2)[..., : q.shape[-2], :].repeat_interleave(
        BLOCK, -1)[..., :k]


def dense(m: int, k: int, n: int) -> dict[str, float]:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    q, s = quantize_groups(EAGER, x, k, BLOCK, exact=False)
    w_q, w_s = quantize_weight(w.float(), "block", BLOCK)
    out = ops.fp8_block_mm(q, s, w_q, w_s, None, BLOCK, torch.bfloat16)
    exact = _deq(q, s, 1) @ _deq(w_q, w_s, BLOCK).T
    qr, sr = quantize_per_token(EAGER, x, exact=False)
    wr_q, wr_s = quantize_weight(w.float(), "per_channel")
    wt, srow = wr_q.t(), wr_s.reshape(1, n).contiguous()
    flops = 2 * m * k * n
    times = {
        "block_mm": do_bench(lambda: ops.fp8_block_mm(q, s, w_q, w_s, None, BLOCK, torch.bfloat16)),
        "scaled_mm_rowwise": do_bench(lambda: torch._scaled_mm(qr, wt, sr, srow, out_dtype=torch.bfloat16,
                                                               use_fast_accum=True)),
        "bf16_mm": do_bench(lambda: x @ w.T),
    }
    row = {"m": m, "k": k, "n": n, "cosine_vs_float64": _cos(out, exact)}
    for name, ms in times.items():
        row[f"{name}_ms"], row[f"{name}_tflops"] = ms, flops / ms / 1e9
    return row


def grouped(tokens: int, experts: int = 53, top_k: int = 3, d: int = 1536, f: int = 1152) -> dict[str, float]:
    gen = torch.Generator(device="cuda").manual_seed(0)
    choice = torch.rand(tokens, experts, device="cuda", generator=gen).topk(top_k, -1).indices.flatten()
    counts = torch.bincount(choice, minlength=experts)
    offs = counts.cumsum(0).to(torch.int32)
    rows = int(offs[-1])
    x = torch.randn(rows, d, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(experts, f, d, device="cuda") * 0.02
    q, s = quantize_groups(EAGER, x, d, BLOCK, exact=False)
    blocks = [quantize_weight(w[e], "block", BLOCK) for e in range(experts)]
    w_q, w_s = torch.stack([b[0] for b in blocks]), torch.stack([b[1] for b in blocks])
    out = ops.fp8_block_mm(q, s, w_q, w_s, offs, BLOCK, torch.bfloat16)
    start, cos = 0, []
    for e, end in enumerate(offs.tolist()[:4]):  # a few experts against float64
        exact = _deq(q[start:end], s[start:end], 1) @ _deq(w_q[e], w_s[e], BLOCK).T
        cos.append(_cos(out[start:end], exact))
        start = end
    rowwise = [quantize_weight(w[e], "per_channel") for e in range(experts)]
    wr = torch.stack([r[0] for r in rowwise]).transpose(-2, -1)  # (E, d, f) column-major
    wr_s = torch.stack([r[1].reshape(-1) for r in rowwise]).contiguous()  # (E, f)
    qr, sr = quantize_per_token(EAGER, x, exact=False)
    sr = sr.reshape(-1)
    wb = w.to(torch.bfloat16).transpose(-2, -1)
    flops = 2 * rows * d * f
    times = {
        "block_mm_grouped": do_bench(lambda: ops.fp8_block_mm(q, s, w_q, w_s, offs, BLOCK, torch.bfloat16)),
        "scaled_grouped_mm_rowwise": do_bench(lambda: torch._scaled_grouped_mm(
            qr, wr, sr, wr_s, offs=offs, out_dtype=torch.bfloat16, use_fast_accum=True)),
        "bf16_grouped_mm": do_bench(lambda: torch._grouped_mm(x, wb, offs=offs)),
    }
    row = {"tokens": tokens, "rows": rows, "experts": experts, "d": d, "f": f, "min_cosine_vs_float64": min(cos)}
    for name, ms in times.items():
        row[f"{name}_ms"], row[f"{name}_tflops"] = ms, flops / ms / 1e9
    return row


def main() -> None:
    out = sys.argv[1]
    result: dict[str, object] = {"device": torch.cuda.get_device_name(), "dense": [], "grouped": []}
    for m, k, n in ((16384, 2048, 2048), (49152, 2048, 5632), (49152, 5632, 2048), (1024, 2048, 2048)):
        try:
            result["dense"].append(dense(m, k, n))  # type: ignore[union-attr]
        except Exception as err:  # noqa: BLE001 (a probe: record and go on)
            result["dense"].append({"m": m, "k": k, "n": n, "error": repr(err)[:2000]})  # type: ignore[union-attr]
        print(result["dense"][-1], flush=True)  # type: ignore[index]
        Path(out).write_text(json.dumps(result, indent=1))
    for tokens in (8 * 512 * 3, 32 * 512 * 3):
        try:
            result["grouped"].append(grouped(tokens))  # type: ignore[union-attr]
        except Exception as err:  # noqa: BLE001
            result["grouped"].append({"tokens": tokens, "error": repr(err)[:2000]})  # type: ignore[union-attr]
        print(result["grouped"][-1], flush=True)  # type: ignore[index]
        Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
