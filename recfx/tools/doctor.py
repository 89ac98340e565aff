"""``recfx doctor``: what this machine has (versions, GPUs, ONNX Runtime providers, TensorRT) and which backends
can run here, with the reason for each one that cannot."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from recfx.tools.commands import command

_LIBRARIES = (
    ("triton", "Triton kernels (GPU; CPU only through TRITON_INTERPRET=1)"),
    ("onnx", "ONNX export"),
    ("onnxscript", "ONNX export (torch.onnx dynamo exporter)"),
    ("onnxruntime", "ort / ort-fp8 backends"),
    ("tensorrt", "NVIDIA TensorRT: what export-onnx / lint-onnx files target; recfx has no TensorRT backend yet"),
    ("numpy", ""),
    ("matplotlib", "bench / analyze plots"),
    ("rich", "tables and progress bars"),
)


@command("doctor", help="show versions, GPUs, ONNX Runtime providers, TensorRT, and which backends can run here")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")


def doctor_report() -> dict[str, Any]:
    """Everything ``recfx doctor`` shows, as a JSON-friendly dict.

    Returns:
        ``environment()`` (versions, GPUs, providers) plus ``backends``: one entry per registered backend with
        ``available``, ``reason``, ``fp8``, ``priority`` and ``description``, and what ``auto``/``auto-fp8`` pick.

    Example:
        >>> report = doctor_report()
        >>> any(b["name"] == "eager" and b["available"] for b in report["backends"])
        True
    """
    from recfx.backends import AUTO_NAMES, BACKENDS, backend_status, resolve_backend
    from recfx.bench.env import environment
    from recfx.errors import BackendUnavailableError

    report = environment()
    report["backends"] = [
        {"name": name, "available": avail.ok, "reason": avail.reason, "fp8": BACKENDS.get(name).fp8,
         "priority": BACKENDS.get(name).priority, "description": description}
        for name, avail, description in backend_status()]
    auto = {}
    for name in AUTO_NAMES:
        try:
            auto[name] = resolve_backend(name)[0].name
        except BackendUnavailableError as err:
            auto[name] = f"none ({err})"
    report["auto"] = auto
    return report


def run(args: argparse.Namespace) -> int:
    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    software = Table(title="software", title_justify="left", show_header=False)
    software.add_column("what", style="bold")
    software.add_column("version")
    software.add_column("note")
    cuda = report["torch_cuda"]
    software.add_row("recfx", report["recfx"], "")
    software.add_row("python", report["python"], escape(report["executable"]))
    software.add_row("torch", report["torch"], f"built with CUDA {cuda}" if cuda else "CPU-only build")
    if report["cudnn"]:
        software.add_row("cuDNN", str(report["cudnn"]), "")
    for module, use in _LIBRARIES:
        version = report["versions"].get(module)
        note = report["notes"].get(module, "")
        if module == "onnxruntime" and report["onnxruntime_providers"] is not None:
            note = "providers: " + ", ".join(report["onnxruntime_providers"])
        software.add_row(module, version or "[red]absent[/red]", escape(note or use))
    software.add_row("C++ compiler", escape(report["cxx_compiler"] or "none"), "Inductor's CPU code generation")
    console.print(software)

    if report["gpus"]:
        gpus = Table(title="GPUs", title_justify="left")
        for col in ("#", "name", "compute capability", "memory GiB", "SMs"):
            gpus.add_column(col)
        for gpu in report["gpus"]:
            gpus.add_row(str(gpu["index"]), escape(gpu["name"]), gpu["capability"], str(gpu["memory_gb"]),
                         str(gpu["multiprocessors"]))
        console.print(gpus)
    else:
        console.print("GPUs: none visible to torch (CUDA backends and FP8 GEMMs on GPU are unavailable)")

    backends = Table(title="backends", title_justify="left")
    for col in ("backend", "here", "fp8", "priority", "why not / what it does"):
        backends.add_column(col)
    for entry in report["backends"]:
        backends.add_row(entry["name"], "[green]yes[/green]" if entry["available"] else "[red]no[/red]",
                         "fp8" if entry["fp8"] else "", str(entry["priority"]),
                         escape(entry["reason"] if not entry["available"] else entry["description"]))
    console.print(backends)
    for name, pick in report["auto"].items():
        console.print(f"backend={name!r} picks {escape(pick)}", highlight=False)
    return 0
