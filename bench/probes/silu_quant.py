"""How fast can SiLU(gate) * up be quantized per row to FP8 on this GPU? (a probe, not a tool)

onerec-1b's down projection reads ``SiLU(gate) * up`` (rows of 5,632) quantized per token. Inductor fuses it into
one persistent reduction over a block of 8,192 (the row padded to a power of two): on an H100 at batch 32 that
kernel took 12.0 + 7.8 ms against 8.5 + 5.6 ms for the bf16 path's plain ``SiLU * up`` kernels, although it writes
half the bytes. This probe times, at the real shapes, with ``triton.testing.do_bench``:

- ``bf16``: Inductor's ``silu(g) * u`` in bf16 (what the bf16 path runs);
- ``inductor``: Inductor's fused quantization (``recfx.ops.fp8_rows.quantize_per_token``'s float32 recipe under
  ``torch.compile``, as ``cuda-fp8`` compiles it), with recfx's persistent-row limit and with Inductor's own (each
  keyed into Inductor's cache as the backends key it);
- ``triton-*``: ``recfx.kernels.fp8_silu_quant``'s kernels (``recfx::silu_mul_fp8``): the row in one padded block
  (Inductor's layout), in chunks kept in registers (less padding: 3 x 2,048 for 5,632), and two passes over chunks
  (the second re-reads the row, from L2), each at several warp counts; ``op`` is the op as ``cuda-fp8`` calls it;

and counts each one's FP8 bytes and scales that differ from ``per_token_quantize`` (the reference recipe) applied to
the product computed in float32::

    PYTHONPATH=$PWD python3 bench/probes/silu_quant.py OUT.json [--rows 32768,49152] [--width 5632]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import triton

from recfx.kernels.fp8_silu_quant import silu_quant_chunks, silu_quant_two_pass


def candidates(width: int) -> dict[str, tuple[object, dict[str, int], int]]:
    """name -> (kernel, constexprs, num_warps)."""
    found: dict[str, tuple[object, dict[str, int], int]] = {}
    block = triton.next_power_of_2(width)
    for warps in (4, 8, 16):  # Inductor's layout: the row in one padded block
        found[f"triton-block{block}-w{warps}"] = (silu_quant_chunks, {"CHUNK": block, "CHUNKS": 1}, warps)
    for chunk in (1024, 2048):
        chunks = triton.cdiv(width, chunk)
        if chunks <= 4:
            for warps in (4, 8, 16):
                found[f"triton-chunks{chunks}x{chunk}-w{warps}"] = (silu_quant_chunks, {"CHUNK": chunk,
                                                                                        "CHUNKS": chunks}, warps)
    for chunk in (1024, 2048):
        for warps in (4, 8):
            found[f"triton-twopass{chunk}-w{warps}"] = (silu_quant_two_pass, {"CHUNK": chunk}, warps)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--rows", default="32768,49152")
    parser.add_argument("--width", type=int, default=5632)
    args = parser.parse_args(argv)

    from triton.testing import do_bench

    import recfx.ops  # noqa: F401  (defines recfx::silu_mul_fp8)
    from recfx.backends.inductor import inductor_heuristics, keyed_options
    from recfx.ops.fp8 import per_token_quantize
    from recfx.ops.fp8_rows import EAGER, quantize_per_token

    def silu_bf16(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(g) * u

    def silu_fp8(g: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_per_token(EAGER, torch.nn.functional.silu(g) * u, exact=False)

    results: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                  "triton": triton.__version__, "width": args.width, "rows": []}
    for m in (int(r) for r in args.rows.split(",")):
        torch.manual_seed(0)
        g = torch.randn(m, args.width, device="cuda", dtype=torch.bfloat16) * 2
        u = torch.randn(m, args.width, device="cuda", dtype=torch.bfloat16)
        # float32 SiLU and product, as Inductor computes them in one kernel (eager bf16 rounds each op's output)
        ref_q, ref_s = per_token_quantize(torch.nn.functional.silu(g.float()) * u.float())
        row: dict[str, object] = {"M": m, "ideal_fp8_ms_at_3.35TBps": m * args.width * 5 / 3.35e12 * 1e3}
        torch._dynamo.reset()
        bf16 = torch.compile(silu_bf16)
        row["bf16_inductor_ms"] = do_bench(lambda: bf16(g, u))
        for label, rows in (("inductor_recfx_rows", 8192), ("inductor_own_rows", 0)):
            torch._dynamo.reset()
            with inductor_heuristics(rows):  # the limit keyed into the FX graph cache, as the backends do
                fn = torch.compile(silu_fp8, options=keyed_options(None, rows))
                q, s = fn(g, u)
            row[f"{label}_ms"] = do_bench(lambda f=fn: f(g, u))
            row[f"{label}_fp8_mismatches"] = int((q.view(torch.uint8) != ref_q.view(torch.uint8)).sum())
        q = torch.empty(m, args.width, device="cuda", dtype=torch.float8_e4m3fn)
        s = torch.empty(m, device="cuda", dtype=torch.float32)
        for name, (kernel, constexprs, warps) in candidates(args.width).items():
            def launch(k=kernel, c=constexprs, w=warps) -> None:
                k[(m,)](g, u, q, s, args.width, num_warps=w, **c)  # type: ignore[index]
            try:
                launch()
                mismatches = int((q.view(torch.uint8) != ref_q.view(torch.uint8)).sum())
                scale_err = float(((s - ref_s.flatten()).abs() / ref_s.flatten()).max())
                row[name] = {"ms": do_bench(launch), "fp8_mismatches": mismatches, "scale_rel_err": scale_err}
            except Exception as exc:  # noqa: BLE001  (one kernel failing to build must not lose the rest)
                row[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(m, name, row[name], file=sys.stderr, flush=True)
        row["op_ms"] = do_bench(lambda: torch.ops.recfx.silu_mul_fp8(g, u))
        results["rows"].append(row)  # type: ignore[union-attr]
        print(json.dumps(row, indent=1), flush=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
