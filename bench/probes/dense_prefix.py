"""Probe behind ``recfx/kernels/ksa_dense.py``: which dense attention kernel is fast on this GPU, and how fast the
KSA summary prefix runs as ONE dense causal attention (text queries regrouped by their offset in the chunk).

    PYTHONPATH=$PWD python3 bench/probes/dense_prefix.py $OUT/probe.json

Times SDPA causal (B=1, 16 heads x 128, bf16) with each backend at 32K and 64K tokens, then the summary-prefix
sub-problem of KSA (k=8, S=1, W=128) through cuDNN, FlashAttention-2 and the memory-efficient kernel, on the
strided views and on contiguous copies, each checked against float32 on a few rows. H200 results:
``bench/results/ksa_dense_probe.json`` (the first, ad-hoc version of this script) and
``bench/results/ksa_dense_probe2.json`` (this version, fourth session: cuDNN 536 / 573 TFLOP/s on the views at
32K / 64K, contiguous copies within 0.3%, FlashAttention-2 317 / 341, SDPA's default cuDNN 594 / 605).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

from recfx.kernels.ksa_dense import _chunk_view, dense_prefix_chunks

HEADS, HEAD_DIM, CHUNK, WINDOW = 16, 128, 8, 128
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}
aten = torch.ops.aten


def timed(fn: Callable[[], Any]) -> float:
    fn()
    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=25, rep=150, return_mode="median"))


def sdpa_backends(n: int) -> dict[str, Any]:
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * HEAD_DIM * HEADS * n * (n + 1) / 2
    row: dict[str, Any] = {"default": timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))}
    for name, backend in BACKENDS.items():
        try:
            with sdpa_kernel([backend]):
                row[name] = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        except RuntimeError as err:  # a backend that refuses these inputs is a result too
            row[name] = f"RuntimeError: {str(err)[:200]}"
    return {name: {"ms": ms, "tflops": flops / ms / 1e9} if isinstance(ms, float) else ms for name, ms in row.items()}


def prefix_kernels(n: int) -> dict[str, Any]:
    length = n + n // CHUNK
    q, k, v = (torch.randn(1, length, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    chunks = dense_prefix_chunks(n, CHUNK, WINDOW)
    qv = _chunk_view(q, WINDOW + 1, 0, CHUNK, chunks, CHUNK)  # (p, h, c', d)
    kv, vv = (_chunk_view(x, 0, CHUNK, CHUNK, chunks, 1).expand(CHUNK, -1, -1, -1) for x in (k, v))
    flops = 4 * HEAD_DIM * CHUNK * HEADS * chunks * (chunks + 1) / 2
    scale = HEAD_DIM**-0.5
    calls = {
        "cudnn": lambda a, b, c: aten._scaled_dot_product_cudnn_attention(a, b, c, None, True, 0.0, True, False,
                                                                          scale=scale),
        "flash": lambda a, b, c: aten._scaled_dot_product_flash_attention(a, b, c, 0.0, True, False, scale=scale),
        "efficient": lambda a, b, c: aten._scaled_dot_product_efficient_attention(a, b, c, None, True, 0.0, True,
                                                                                  scale=scale),
    }
    contiguous = [x.contiguous() for x in (qv, kv, vv)]
    result: dict[str, Any] = {"prefix_chunks": chunks}
    for name, call in calls.items():
        for layout, args in (("view", (qv, kv, vv)), ("contiguous", contiguous)):
            out, lse = call(*args)[:2]
            lse = lse[..., :chunks].reshape(CHUNK, HEADS, chunks)
            err = 0.0
            for r in (0, chunks // 3, chunks - 1):  # row c' sees summaries 0..c'
                s = torch.einsum("phd,phjd->phj", qv[:, :, r].float(), kv[:, :, : r + 1].float()) * scale
                want = torch.einsum("phj,phjd->phd", torch.softmax(s, -1), vv[:, :, : r + 1].float())
                err = max(err, ((out[:, :, r].float() - want).norm() / want.norm()).item(),
                          (lse[..., r] - torch.logsumexp(s, -1)).abs().max().item())
            ms = timed(lambda call=call, args=args: call(*args))
            result[f"{name}_{layout}"] = {"ms": ms, "tflops": flops / ms / 1e9, "max_err": err,
                                          "out_stride": list(out.stride())}
            print(n, name, layout, json.dumps(result[f"{name}_{layout}"]), flush=True)
    return result


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    for n in (32768, 65536):
        out[f"sdpa_{n}"] = sdpa_backends(n)
        print(n, "sdpa causal", json.dumps(out[f"sdpa_{n}"]), flush=True)
        out[f"prefix_{n}"] = prefix_kernels(n)
        torch.cuda.empty_cache()
    with open(sys.argv[1] if len(sys.argv) > 1 else "dense_prefix_probe.json", "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
