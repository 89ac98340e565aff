"""Probe: time the parts of the dense-prefix path separately (dense call, pair kernel, single-tile kernel on the
rest, single-tile kernel on everything). Timing only.

    PYTHONPATH=$PWD python3 bench/probes/pairs_time.py 32768,65536
"""

import json
import sys

import torch
from triton.testing import do_bench

from recfx.kernels import ksa_band, ksa_dense
from recfx.kernels import ksa_prefill as kp
from recfx.kernels.ksa_tma import chunk_descriptors
from recfx.models.ksa_mask import interleaved_length

H, D, K, W = 16, 128, 8, 128
CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "SPLIT_LOOPS": False, "num_warps": 4, "num_stages": 2}


def timed(fn) -> float:
    fn()
    torch.cuda.synchronize()
    return float(do_bench(fn, warmup=20, rep=150, return_mode="median"))


for n in (int(x) for x in sys.argv[1].split(",")):
    length = interleaved_length(n, K, 1)
    q, k, v = (torch.randn(1, length, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out, lse = torch.empty_like(q), torch.empty(1, H, length, device="cuda", dtype=torch.float32)
    given = ksa_dense.dense_prefix(q, k, v, K, W, D**-0.5)
    kt, _ = chunk_descriptors(k, K, 1)
    vt, _ = chunk_descriptors(v, K, 1)
    row = {"n": n, "dense_ms": timed(lambda: ksa_dense.dense_prefix(q, k, v, K, W, D**-0.5))}
    row["pairs_kernel_ms"] = timed(lambda: ksa_band.launch_pairs(q, k, v, out, lse, kt, vt, given, K, W,
                                                                  D**-0.5 * kp.LOG2E))
    no_pairs = kp._Launch(K, 1, W, D**-0.5, {**CONFIG, "PAIRS": 0}, True)
    row["single_tile_all_ms"] = timed(lambda: no_pairs(q, k, v, out, lse, given))
    with_pairs = kp._Launch(K, 1, W, D**-0.5, {**CONFIG, "PAIRS": 1}, True)
    row["pairs_then_rest_ms"] = timed(lambda: with_pairs(q, k, v, out, lse, given))
    print(json.dumps(row), flush=True)
