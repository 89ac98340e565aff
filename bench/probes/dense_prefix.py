"""Probe: which SDPA backend is fast on this GPU, and how fast is the KSA summary-prefix part as ONE dense causal
attention (text tokens of chunk c, regrouped by their position p in the chunk, see summaries [0, c - W))."""
import json, sys, time
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

def t(fn, rep=150):
    fn(); torch.cuda.synchronize()
    return float(do_bench(fn, warmup=25, rep=rep, return_mode="median"))

out = {"torch": torch.__version__, "dev": torch.cuda.get_device_name()}
H, D, K, S, W = 16, 128, 8, 1, 128
aten = torch.ops.aten
for n in (32768, 65536):
    qt, kt, vt = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * D * H * n * (n + 1) / 2
    row = {}
    row["default"] = t(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True))
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel([be]):
                row[name] = t(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True))
        except Exception as e:
            row[name] = f"ERR {type(e).__name__}: {str(e)[:200]}"
    row = {k: (v, flops / v / 1e9) if isinstance(v, float) else v for k, v in row.items()}
    print(n, "sdpa causal ms, TFLOP/s", json.dumps(row), flush=True)
    out[f"sdpa_{n}"] = row
    del qt, kt, vt
    # ---- summary prefix part as one dense causal attention
    C = n // K
    L = C * (K + S)
    q, k, v = (torch.randn(1, L, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    Cp = C - W - 1  # query chunks W+1 .. C-1 -> c' = c - W - 1 sees summaries 0..c'
    B = K + S
    sL = q.stride(1)
    qv = q.as_strided((K, H, Cp, D), (sL, q.stride(2), B * sL, 1), storage_offset=(W + 1) * B * sL)
    kv_ = k.as_strided((1, H, Cp, D), (0, k.stride(2), B * sL, 1), storage_offset=K * sL).expand(K, H, Cp, D)
    vv = v.as_strided((1, H, Cp, D), (0, v.stride(2), B * sL, 1), storage_offset=K * sL).expand(K, H, Cp, D)
    pairs = K * H * Cp * (Cp + 1) / 2
    pf = 4 * D * pairs
    res = {}
    def flash_op():
        return aten._scaled_dot_product_flash_attention(qv, kv_, vv, 0.0, True, False, scale=D ** -0.5)
    def cudnn_op():
        return aten._scaled_dot_product_cudnn_attention(qv, kv_, vv, None, True, 0.0, True, False, scale=D ** -0.5)
    def eff_op():
        return aten._scaled_dot_product_efficient_attention(qv, kv_, vv, None, True, 0.0, True, scale=D ** -0.5)
    qc, kc, vc = qv.contiguous(), kv_.contiguous(), vv.contiguous()
    def cudnn_contig():
        return aten._scaled_dot_product_cudnn_attention(qc, kc, vc, None, True, 0.0, True, False, scale=D ** -0.5)
    def flash_contig():
        return aten._scaled_dot_product_flash_attention(qc, kc, vc, 0.0, True, False, scale=D ** -0.5)
    # reference on sampled rows, fp32
    ref_rows = torch.tensor([0, 1, Cp // 3, Cp - 1], device="cuda")
    for name, fn in [("cudnn_view", cudnn_op),
                     ("cudnn_contig", cudnn_contig), ("flash_contig", flash_contig)]:
        try:
            o = fn()
            ov, lse = o[0], o[1].reshape(K, H, -1)
            errs = []
            for r in ref_rows.tolist():
                s = torch.einsum("khd,khjd->khj", qv[:, :, r].float(), kv_[:, :, : r + 1].float()) * D ** -0.5
                pr = torch.softmax(s, -1)
                want = torch.einsum("khj,khjd->khd", pr, vv[:, :, : r + 1].float())
                errs.append(((ov[:, :, r].float() - want).norm() / want.norm()).item())
                errs.append((lse[..., r].float() - torch.logsumexp(s, -1)).abs().max().item())
            ms = t(fn)
            res[name] = {"ms": ms, "tflops": pf / ms / 1e9, "err": max(errs), "out_shape": list(ov.shape),
                         "out_stride": list(ov.stride()), "lse_shape": list(lse.shape)}
        except Exception as e:
            res[name] = f"ERR {type(e).__name__}: {str(e)[:300]}"
        print(n, name, json.dumps(res[name]), flush=True)
    try:
        res["sdpa_view_default"] = t(lambda: F.scaled_dot_product_attention(qv, kv_, vv, is_causal=True))
    except Exception as e:
        res["sdpa_view_default"] = f"ERR {e}"
    res["copy_q_ms"] = t(lambda: qv.contiguous())
    print(n, "default", res["sdpa_view_default"], "copy", res["copy_q_ms"], flush=True)
    out[f"prefix_{n}"] = res
    del q, k, v, qc, kc, vc
    torch.cuda.empty_cache()
json.dump(out, open(sys.argv[1], "w"), indent=1)
