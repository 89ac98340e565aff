"""Compile the KSA and FP8-attention kernels for a GPU architecture without a GPU, and read their resource use.

Triton ships ``ptxas`` and ``cuobjdump``, so a CPU-only machine can build the sm_90 binary of a kernel and read
its registers per thread, local-memory stack (spills) and shared memory. CPU tests use this to catch kernels that
no longer compile for the GPU (the interpreter runs Python, not the compiler), and
``python -m recfx.kernels.resources`` prints the table for every autotuned prefill config. It must run without
``TRITON_INTERPRET=1`` (under the interpreter, kernels are Python functions), so tests run it in a subprocess.

    >>> use = prefill_resources(64, 64, num_warps=4, num_stages=3, tma=True)  # doctest: +SKIP
    >>> use.registers, use.stack_bytes  # doctest: +SKIP
    (255, 272)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import subprocess
import tempfile
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from recfx.kernels import fp8_attention, fp8_block_gemm, ksa_gluon, ksa_gluon_kernel, ksa_prefill, ksa_tma

__all__ = ["KernelResources", "band_resources", "fp8_attention_resources", "fp8_block_gemm_resources",
           "prefill_resources"]

#: the kernel pointer arguments and their element types (bf16 inputs, float32 log-sum-exp)
_POINTERS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "Lse": "*fp32", "PO": "*bf16", "PL": "*fp32"}


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """What one compiled kernel needs per thread / per CTA (from ``cuobjdump -res-usage``)."""

    registers: int
    stack_bytes: int  # local memory per thread: register spills when non-zero
    shared_bytes: int  # dynamic shared memory per CTA (Triton's metadata)


def _cuobjdump() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def prefill_resources(block_m: int, block_n: int, *, num_warps: int, num_stages: int, tma: bool,
                      split_loops: bool = False, dense: bool = False, head_dim: int = 128, chunk: int = 8,
                      summaries: int = 1, arch: int = 90) -> KernelResources:
    """Build the prefill kernel for ``sm_<arch>`` (bf16, GQA 1) and return its resource use; ``dense``: the variant
    that starts from a dense summary prefix (``ksa_dense.py``).

    Raises:
        triton.compiler.errors.CompilationError: the kernel does not compile for that target.
        FileNotFoundError: this Triton build ships no ``cuobjdump``.
    """
    constexprs: dict[str, Any] = {
        "GROUPS": 1, "HEAD_DIM": head_dim, "BLOCK_D": head_dim, "CHUNK": chunk, "SUMMARIES": summaries,
        "BLOCK_M": block_m, "BLOCK_N": block_n, "SPLIT_LOOPS": split_loops, "TMA": tma,
        "DENSE": dense}
    descriptors = {}
    for name in ("KT", "VT", "KP", "VP"):
        group = chunk if name in ("KT", "VT") else summaries
        box = ksa_tma.box(4 if group == 1 else 5, block_n, group, head_dim)
        if tma:
            descriptors[name] = f"tensordesc<bf16[{','.join(map(str, box))}]>"
        else:
            constexprs[name] = None
    signature, indexed = _signature(ksa_prefill._ksa_prefill_body, constexprs, descriptors)
    source = ASTSource(fn=ksa_prefill._ksa_prefill_body, signature=signature, constexprs=indexed)
    return _resources(triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                     options={"num_warps": num_warps, "num_stages": num_stages}))


def band_resources(block_n: int, stages: int, q_bufs: int = 2, balanced: bool = True, summary_smem: bool = True,
                   *, head_dim: int = 128, chunk: int = 8, arch: int = 90) -> KernelResources:
    """Build the Gluon band kernel (``ksa_gluon_kernel.py``, bf16, GQA 1) for ``sm_<arch>`` and return its resource use.

    Registers and stack are those ptxas reports for the whole kernel (its partitions change their register count
    with setmaxnreg); shared memory decides how many CTAs fit on an SM (one, by design).

    Raises:
        RuntimeError: this Triton has no Gluon.
        triton.compiler.errors.CompilationError: the kernel does not compile for that target.
    """
    if ksa_gluon.gluon is None:
        raise RuntimeError("this Triton build has no Gluon (triton.experimental.gluon)")
    from triton.experimental.gluon._runtime import GluonASTSource

    summary_smem = summary_smem and block_n == ksa_gluon.BLOCK_M  # as the launcher decides (parse_config)
    constexprs: dict[str, Any] = {"GROUPS": 1, "HEAD_DIM": head_dim, "CHUNK": chunk, "BLOCK_M": ksa_gluon.BLOCK_M,
                                  "BLOCK_N": block_n, "STAGES": stages, "Q_BUFS": q_bufs,
                                  "BALANCED": balanced, "SUMMARY_SMEM": summary_smem, "num_warps": 4}
    layout = ksa_gluon._nvmma_layout(128, 16, 5)  # bf16 rows of 128 or 64 elements: the launcher's layouts
    descriptors = {name: f"tensordesc<bf16[1,1,{rows // chunk},{chunk},{head_dim}],{layout!r}>"
                   for name, rows in (("q_desc", ksa_gluon.BLOCK_M), ("k_desc", block_n), ("v_desc", block_n),
                                      ("o_desc", ksa_gluon.BLOCK_M // 2))}
    summary_layout = ksa_gluon._nvmma_layout(128, 16, 4)
    summary = f"tensordesc<bf16[1,1,{ksa_gluon.BLOCK_M // chunk},{head_dim}],{summary_layout!r}>"
    descriptors.update(dict.fromkeys(("qs_desc", "ks_desc", "vs_desc"), summary))
    signature, indexed = _signature(ksa_gluon_kernel._band_kernel, constexprs, descriptors)
    source = GluonASTSource(fn=ksa_gluon_kernel._band_kernel, signature=signature, constexprs=indexed)
    return _resources(triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4}))


def fp8_attention_resources(block_m: int, block_n: int, *, num_warps: int, num_stages: int, head_dim: int = 128,
                            arch: int = 90) -> KernelResources:
    """Build the FP8 attention kernel (``fp8_attention.py``, bf16 output) for ``sm_<arch>`` as it is launched on
    contiguous tensors: unit innermost strides (Triton specializes arguments equal to 1), 16-divisible pointers and
    outer strides of Q, K, V (whose key axis ``quantize_values`` pads to 16) and the output (its divisibility
    hints); the key count and the scales' strides are left unaligned (3,000 keys in onerec-1b).

    Raises:
        triton.compiler.errors.CompilationError: the kernel does not compile for that target.
    """
    kernel = fp8_attention._fp8_attention_body
    unit = ("sq_d", "sqs_n", "sk_d", "sks_t", "sv_t", "svs_d", "so_d")
    constexprs: dict[str, Any] = {"HEAD_DIM": head_dim, "BLOCK_M": block_m, "BLOCK_N": block_n,
                                  "SOFT_ROUND": False, **dict.fromkeys(unit, 1)}
    pointers = {"Q": "*fp8e4nv", "QS": "*fp32", "K": "*fp8e4nv", "KS": "*fp32", "VT": "*fp8e4nv", "VS": "*fp32",
                "O": "*bf16"}
    signature, indexed = _signature(kernel, constexprs, {}, pointers)
    names = list(signature)
    aligned = [n for n in names if n not in constexprs and (n in pointers or n[:3] in ("sq_", "sk_", "sv_", "so_"))]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn=kernel, signature=signature, constexprs=indexed, attrs=attrs)
    return _resources(triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                     options={"num_warps": num_warps, "num_stages": num_stages}))


def fp8_block_gemm_resources(block_m: int, block_n: int, *, num_warps: int, num_stages: int, grouped: bool,
                             block_k: int = 128, w_rows: int = 128, arch: int = 90) -> KernelResources:
    """Build the block-scaled FP8 GEMM kernel (``fp8_block_gemm.py``, bf16 output, fast accumulation) for
    ``sm_<arch>`` as a launch on contiguous operands specializes it: unit innermost strides, 16-divisible pointers,
    N, K and the row strides (every shape the lowering passes: K is a multiple of the block, N of 16 in the
    models), so that the K loop is software-pipelined as on the GPU; M and the scales' strides stay unaligned.

    Raises:
        triton.compiler.errors.CompilationError: the kernel does not compile for that target.
    """
    kernel = fp8_block_gemm._fp8_block_gemm_body
    unit = ("sa_k", "sw_k", "sc_n")
    constexprs: dict[str, Any] = {"W_ROWS": w_rows, "GROUPED": grouped, "IMPRECISE": None, "BLOCK_M": block_m,
                                  "BLOCK_N": block_n, "BLOCK_K": block_k, **dict.fromkeys(unit, 1)}
    pointers = {"A": "*fp8e4nv", "AS": "*fp32", "W": "*fp8e4nv", "WS": "*fp32", "C": "*bf16", "OFFS": "*i32"}
    signature, indexed = _signature(kernel, constexprs, {}, pointers)
    names = list(signature)
    aligned = ("A", "AS", "W", "WS", "C", "OFFS", "N", "K", "sa_m", "sw_e", "sw_n", "sc_m")
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    source = ASTSource(fn=kernel, signature=signature, constexprs=indexed, attrs=attrs)
    return _resources(triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                     options={"num_warps": num_warps, "num_stages": num_stages}))


def _signature(kernel: Any, constexprs: dict[str, Any], descriptors: dict[str, str],
               pointers: dict[str, str] | None = None) -> tuple[dict[str, str], dict[tuple[int, ...], Any]]:
    """Compile signature of a jitted kernel: constexprs, the pointers of ``pointers`` (default the bf16/fp32 ones of
    ``_POINTERS``), the given descriptor types, ``qk_scale`` as fp32 and every other argument as i32; and the
    constexprs by position."""
    pointers = _POINTERS if pointers is None else pointers
    names = list(inspect.signature(kernel.fn).parameters)
    signature = {}
    for name in names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        elif name in descriptors:
            signature[name] = descriptors[name]
        else:
            signature[name] = "fp32" if name == "qk_scale" else "i32"
    return signature, {(names.index(k),): v for k, v in constexprs.items()}


def _resources(kernel: Any) -> KernelResources:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        usage = subprocess.run([_cuobjdump(), "-res-usage", path], capture_output=True, text=True,
                               check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no register line:\n{usage}")
    return KernelResources(int(found.group(1)), int(found.group(2)), int(kernel.metadata.shared))


def _parse_config(text: str) -> tuple[int, int, int, int, bool, bool, bool]:
    """``BLOCK_M,BLOCK_N,warps,stages,tma|ptr[,split|dense]`` -> the arguments of ``prefill_resources``."""
    parts = text.split(",")
    if len(parts) not in (5, 6) or parts[4] not in ("tma", "ptr") or (len(parts) == 6
                                                                     and parts[5] not in ("split", "dense")):
        raise argparse.ArgumentTypeError(
            f"--config wants BLOCK_M,BLOCK_N,warps,stages,tma|ptr[,split|dense], got {text!r}")
    bm, bn, warps, stages = (int(x) for x in parts[:4])
    return bm, bn, warps, stages, parts[4] == "tma", parts[5:] == ["split"], parts[5:] == ["dense"]


def _parse_band(text: str) -> tuple[int, int, int, bool, bool]:
    try:
        return ksa_gluon.parse_config(text, "--band")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="resource use of the KSA prefill kernel built for a GPU target, "
                                            "without a GPU (default: every autotuned config, TMA and pointer loads)")
    p.add_argument("--arch", type=int, default=90, help="compute capability as an integer (default 90)")
    p.add_argument("--band", action="append", type=_parse_band,
                   metavar="BLOCK_N,STAGES[,Q_BUFS[,BALANCED[,SMEM]]]",
                   help="the Gluon band kernel (ksa_gluon_kernel.py) instead, with these tiles (repeatable)")
    p.add_argument("--fp8-attention", action="store_true",
                   help="the FP8 attention kernel (fp8_attention.py) instead, every autotuned config")
    p.add_argument("--fp8-block-gemm", action="store_true",
                   help="the block-scaled FP8 GEMM kernel (fp8_block_gemm.py) instead, every sm_90 config")
    p.add_argument("--head-dim", type=int, action="append",
                   help="head dims of the FP8 attention kernel to build (repeatable; default 32, 64 and 128)")
    p.add_argument("--config", type=_parse_config, action="append",
                   help="BLOCK_M,BLOCK_N,warps,stages,tma|ptr[,split|dense] (repeatable; dense: the variant that "
                        "starts from a dense summary prefix)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("run without TRITON_INTERPRET=1: the interpreter does not compile kernels")
    if args.fp8_attention:
        print("FP8 attention: head_dim BLOCK_M BLOCK_N warps stages | registers stack(spills) shared")
        for head_dim in args.head_dim or (32, 64, 128):
            for c in fp8_attention._configs():
                use = fp8_attention_resources(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], num_warps=c.num_warps,
                                              num_stages=c.num_stages, head_dim=head_dim, arch=args.arch)
                print(f"{head_dim:8} {c.kwargs['BLOCK_M']:7} {c.kwargs['BLOCK_N']:7} {c.num_warps:5} "
                      f"{c.num_stages:6} | {use.registers:9} {use.stack_bytes:13} {use.shared_bytes:6}", flush=True)
        return 0
    if args.fp8_block_gemm:
        print("FP8 block GEMM: grouped BLOCK_M BLOCK_N warps stages | registers stack(spills) shared")
        for grouped in (False, True):
            for bm, bn, warps, stages in fp8_block_gemm.SM90_SHAPES:
                use = fp8_block_gemm_resources(bm, bn, num_warps=warps, num_stages=stages, grouped=grouped,
                                               arch=args.arch)
                print(f"{grouped!s:7} {bm:7} {bn:7} {warps:5} {stages:6} | {use.registers:9} {use.stack_bytes:13} "
                      f"{use.shared_bytes:6}", flush=True)
        return 0
    if args.band:
        print("Gluon band kernel: BLOCK_N stages q_bufs balanced smem | registers stack(spills) shared")
        for block_n, stages, q_bufs, balanced, smem in args.band:
            use = band_resources(block_n, stages, q_bufs, balanced, smem, arch=args.arch)
            print(f"{block_n:7} {stages:6} {q_bufs:6} {balanced:8d} {smem:4d} | {use.registers:9} "
                  f"{use.stack_bytes:13} {use.shared_bytes:6}", flush=True)
        return 0
    configs = args.config or [
        (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, tma, c.kwargs["SPLIT_LOOPS"], False)
        for c in ksa_prefill._configs() for tma in (True, False)] + [
        (bm, bn, warps, stages, True, False, True) for bm, bn, warps, stages in ksa_prefill.DENSE_SHAPES]
    print("BLOCK_M BLOCK_N warps stages split loads dense | registers stack(spills) shared")
    for bm, bn, warps, stages, tma, split, dense in configs:
        use = prefill_resources(bm, bn, num_warps=warps, num_stages=stages, tma=tma, split_loops=split, dense=dense,
                                arch=args.arch)
        print(f"{bm:7} {bn:7} {warps:5} {stages:6} {split!s:5} {'tma' if tma else 'ptr':5} {dense!s:5} | "
              f"{use.registers:9} {use.stack_bytes:13} {use.shared_bytes:6}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
