"""Where one call's GPU time goes: ``torch.profiler`` kernels grouped by class (``recfx bench --profile``).

A class is read from the kernel's name (cuBLAS / cuDNN / flash / Triton naming); Inductor's fused kernels that hold
an ``amax`` are the FP8 path's activation quantizations fused into their producers. The GEMM table gives each
(M, K, N) shape's achieved TFLOP/s.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch

#: The kernel classes, in the order reports show them.
CLASSES = ("gemm (cuBLAS)", "attention", "fused producer + quantization (triton)", "other fused (triton)", "top-k",
           "other")
#: The ops whose per-shape rates are listed.
GEMM_OPS = ("aten::_scaled_mm", "aten::mm", "aten::addmm", "aten::_grouped_mm", "aten::_scaled_grouped_mm")


def classify(name: str) -> str:
    """The class of a GPU kernel, from its name."""
    low = name.lower()
    if "amax" in low and ("scaled_mm" in low or "clamp" in low):  # a row amax feeding an FP8 cast
        return CLASSES[2]
    if low.startswith("triton") or "triton_" in low:
        return CLASSES[3]
    if "flash" in low or "fmha" in low or "attention" in low or "cudnn" in low:
        return CLASSES[1]
    if "gemm" in low or "nvjet" in low or "xmma" in low or "cutlass" in low or "sm90" in low:
        return CLASSES[0]
    if "topk" in low or "sort" in low or "radix" in low:
        return CLASSES[4]
    return CLASSES[5]


def gemm_dims(op: str, shapes: list[Any] | None) -> tuple[int, int, int] | None:
    """(M, K, N) of one GEMM call from its recorded input shapes (``None``: not a GEMM the table lists).

    ``addmm`` records ``(bias, a, b)``; the grouped GEMMs take ``a`` (M, K) with all groups' rows and ``b``
    (G, K, N): M counts every group's rows, so the FLOPs are the whole launch's.
    """
    if op not in GEMM_OPS or not shapes:
        return None
    a_b = shapes[1:3] if op == "aten::addmm" else shapes[0:2]
    if len(a_b) < 2 or not all(isinstance(s, (list, tuple)) for s in a_b):
        return None
    a, b = a_b
    if len(a) == 2 and len(b) == 2:
        return a[0], a[1], b[1]
    if "grouped" in op and len(a) == 2 and len(b) == 3:
        return a[0], a[1], b[2]
    return None


def profile_call(call: Callable[[], Any], top: int = 25) -> dict[str, Any]:
    """Profile one ``call()`` (after one warm call) on the GPU (a module that replays a CUDA graph at this shape is
    profiled replaying it: kernel times without the per-op CPU records, so its GEMM table is empty).

    Returns:
        ``{"total_ms", "classes": {class: ms}, "gemm_shapes": [{op, M, K, N, calls, ms, tflops}],
        "top_kernels": [{name, ms}]}``: device time summed over the call's kernels.
    """
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            call()
            torch.cuda.synchronize()
    kernels: dict[str, float] = collections.defaultdict(float)
    for evt in prof.events():  # kernels only: "## Call CompiledFxGraph ##" spans the whole call on the GPU track
        if evt.device_type == torch.autograd.DeviceType.CUDA and not evt.name.startswith("## "):
            kernels[evt.name] += evt.device_time_total / 1e3
    classes = dict.fromkeys(CLASSES, 0.0)
    for name, ms in kernels.items():
        classes[classify(name)] += ms
    shapes = []
    for avg in prof.key_averages(group_by_input_shape=True):
        dims = gemm_dims(avg.key, avg.input_shapes)
        if dims is not None:
            m, k, n = dims
            ms = avg.device_time_total / 1e3
            shapes.append({"op": avg.key, "M": m, "K": k, "N": n, "calls": avg.count, "ms": ms,
                           "tflops": 2.0 * m * k * n * avg.count / ms / 1e9 if ms else None})
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
    return {"total_ms": sum(kernels.values()), "classes": {k: v for k, v in classes.items() if v},
            "gemm_shapes": shapes, "top_kernels": [{"name": n[:160], "ms": ms} for n, ms in ranked]}


def profile_markdown(rows: list[Any]) -> str:
    """A Markdown table of the profiled rows' GPU time by class (empty when no row was profiled)."""
    profiled = [r for r in rows if getattr(r, "profile", None)]
    if not profiled:
        return ""
    present = [c for c in CLASSES if any(c in r.profile["classes"] for r in profiled)]
    lines = ["**GPU time by kernel class (ms, one call, torch.profiler)**", "",
             "| backend | batch | " + " | ".join(present) + " | total |",
             "|:---|---:|" + "---:|" * (len(present) + 1)]
    for r in profiled:
        cells = [f"{r.profile['classes'].get(c, 0.0):.1f}" for c in present]
        lines.append(f"| {r.label} | {r.batch} | " + " | ".join(cells) + f" | {r.profile['total_ms']:.1f} |")
    return "\n".join(lines) + "\n"
