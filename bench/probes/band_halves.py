"""Probe: is the text-band loop bound by K/V traffic from L2? (timing only, results not checked)

A program owns NH x 64 text queries of one head (NH "halves" of 64 rows, each its own 64-row tensor and online
softmax) and walks the ~W*k band keys before its first row through TMA, one K/V tile load feeding every half. NH = 1
is the production kernel's loop shape (64-row tiles: each K/V tile read from L2 per 64 rows); NH = 2 halves that
traffic per FLOP while keeping 64-row tensor-core tiles, with the second half's scores issued before the first
half's softmax (ORDER=1) or after it (ORDER=0). Same total work for every variant.

    PYTHONPATH=$PWD python3 bench/probes/band_halves.py out.json 32768
"""

import json
import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from recfx.kernels.ksa_tiles import softmax_step, tma_tile
from recfx.kernels.ksa_tma import box, chunk_descriptors
from recfx.models.ksa_mask import interleaved_length


@triton.jit
def _half_store(acc, l_i, o_base, t, stride_ol, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr):
    pos = (t // CHUNK) * (CHUNK + 1) + t % CHUNK
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(o_base + pos[:, None] * stride_ol + offs_d[None, :], (acc / l_i[:, None]).to(o_base.dtype.element_ty))


@triton.jit
def _probe(Q, Out, KT, VT, stride_ql, stride_qh, stride_ol, stride_oh, window, qk_scale, CHUNK: tl.constexpr,
           HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, NH: tl.constexpr, ORDER: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    h = tl.program_id(1)
    t0 = pid_m * (64 * NH)
    offs_d = tl.arange(0, HEAD_DIM)
    ta = t0 + tl.arange(0, 64)
    q_base = Q + h * stride_qh
    o_base = Out + h * stride_oh
    qa = tl.load(q_base + ((ta // CHUNK) * (CHUNK + 1) + ta % CHUNK)[:, None] * stride_ql + offs_d[None, :])
    acc_a = tl.zeros([64, HEAD_DIM], tl.float32)
    l_a = tl.zeros([64], tl.float32)
    m_a = tl.full([64], float("-inf"), tl.float32)
    tb = ta + 64
    if NH == 2:
        qb = tl.load(q_base + ((tb // CHUNK) * (CHUNK + 1) + tb % CHUNK)[:, None] * stride_ql + offs_d[None, :])
    else:
        qb = qa
    acc_b = tl.zeros([64, HEAD_DIM], tl.float32)
    l_b = tl.zeros([64], tl.float32)
    m_b = tl.full([64], float("-inf"), tl.float32)
    lo = tl.maximum(t0 - window * CHUNK, 0) // BLOCK_N * BLOCK_N
    for start in tl.range(lo, t0, BLOCK_N):
        k = tma_tile(KT, 0, h, start, CHUNK, HEAD_DIM, BLOCK_N)
        s_a = tl.dot(qa, tl.trans(k))
        if NH == 2 and ORDER == 1:
            s_b = tl.dot(qb, tl.trans(k))
        p_a, alpha_a, m_a, l_a = softmax_step(s_a, None, m_a, l_a, qk_scale, False)
        v = tma_tile(VT, 0, h, start, CHUNK, HEAD_DIM, BLOCK_N)
        acc_a = tl.dot(p_a.to(v.dtype), v, acc_a * alpha_a[:, None])
        if NH == 2:
            if ORDER == 0:
                s_b = tl.dot(qb, tl.trans(k))
            p_b, alpha_b, m_b, l_b = softmax_step(s_b, None, m_b, l_b, qk_scale, False)
            acc_b = tl.dot(p_b.to(v.dtype), v, acc_b * alpha_b[:, None])
    _half_store(acc_a, tl.maximum(l_a, 1e-30), o_base, ta, stride_ol, CHUNK, HEAD_DIM)
    if NH == 2:
        _half_store(acc_b, tl.maximum(l_b, 1e-30), o_base, tb, stride_ol, CHUNK, HEAD_DIM)


def run(n: int, heads: int = 16, head_dim: int = 128, chunk: int = 8, window: int = 128) -> list[dict]:
    length = interleaved_length(n, chunk, 1)
    q, k, v = (torch.randn(1, length, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = torch.empty_like(q)
    kt, _ = chunk_descriptors(k, chunk, 1)
    vt, _ = chunk_descriptors(v, chunk, 1)
    rows = []
    for nh, order, warps, stages in [(1, 0, 4, 2), (1, 0, 4, 3), (2, 1, 4, 2), (2, 0, 4, 2), (2, 1, 8, 2),
                                     (2, 0, 8, 2), (1, 0, 4, 2)]:
        for desc in (kt, vt):
            desc.block_shape = box(5, 64, chunk, head_dim)

        def launch(nh: int = nh, order: int = order, warps: int = warps, stages: int = stages) -> None:
            _probe[(n // (64 * nh), heads)](q, out, kt, vt, q.stride(1), q.stride(2), out.stride(1), out.stride(2),
                                           window, head_dim**-0.5 * 1.4426950408889634, CHUNK=chunk,
                                           HEAD_DIM=head_dim, BLOCK_N=64, NH=nh, ORDER=order, num_warps=warps,
                                           num_stages=stages)

        row = {"n": n, "NH": nh, "ORDER": order, "num_warps": warps, "num_stages": stages}
        try:
            launch()
            torch.cuda.synchronize()
            ms = float(do_bench(launch, warmup=20, rep=150, return_mode="median"))
            pairs = n * min(window * chunk, n) * heads  # about: every row walks ~W*k keys
            row.update(ms=ms, tflops=4 * head_dim * pairs / ms / 1e9)
        except Exception as err:  # noqa: BLE001 - a variant that fails to build is a result too
            row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    results = [r for n in sys.argv[2].split(",") for r in run(int(n))]
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)
