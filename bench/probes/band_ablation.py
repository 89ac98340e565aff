"""Probe: where the time of the text-band kernel goes (prefix='dense'), by timing it with parts left out
(ABLATE bits: 1 summary queries, 2 masked boundary tiles, 4 diagonal tile, 8 unmasked band loop; results are wrong
by construction, only the times matter), and Triton's warp specialisation on the TMA loops."""
import json, sys, time
import torch
import torch.nn.functional as F
from triton.testing import do_bench
from recfx.kernels import ksa_prefill as kp
from recfx.kernels.ksa_dense import dense_prefix
from recfx.models.ksa_mask import interleaved_length

def t(fn, rep=120):
    fn(); torch.cuda.synchronize()
    return float(do_bench(fn, warmup=20, rep=rep, return_mode="median"))

H, D, K, S, W = 16, 128, 8, 1, 128
res = []
for n in [int(x) for x in sys.argv[2].split(",")]:
    L = interleaved_length(n, K, S)
    q, k, v = (torch.randn(1, L, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    dense_ms = t(lambda: dense_prefix(q, k, v, K, W, D ** -0.5))
    print(n, "dense part", dense_ms, flush=True)
    shapes = json.loads(sys.argv[4]) if len(sys.argv) > 4 else [(64, 64, 4, 2), (128, 128, 8, 3)]
    variants = json.loads(sys.argv[3]) if len(sys.argv) > 3 else [dict(ABLATE=a) for a in (0, 1, 2, 4, 8, 7)]
    for bm, bn, w, st in shapes:
        for var in variants:
            cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "SPLIT_LOOPS": False, "num_warps": w, "num_stages": st, **var}
            row = {"n": n, **cfg}
            try:
                prefix = cfg.pop("prefix", "dense")
                ms = t(lambda: kp.ksa_prefill(q, k, v, K, S, W, D ** -0.5, config=cfg, prefix=prefix))
                row.update(ms=ms, band_ms=ms - dense_ms)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            print(json.dumps(row), flush=True)
            res.append(row)
    del q, k, v
    torch.cuda.empty_cache()
json.dump(res, open(sys.argv[1], "w"), indent=1)
