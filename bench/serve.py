"""Serving overhead and dynamic batching on Triton (PyTriton) vs the in-process compiled module, on this machine.

    PYTHONPATH=$PWD .venv-serve/bin/python bench/serve.py --model dlrm-small --out docs/bench/serve-cpu

For one model (compiled on ``--backend`` and saved as a bundle, which every server loads without recompiling):
1. in-process: ``module(*inputs)`` called back to back, at batch 1 and ``--batch`` (latency p50/p99), before and
   after the servers run (other jobs share this machine; the lower p50 of the two is the reference);
2. served, one gRPC client sending the same batches back to back (no dynamic batching): the serving overhead is
   the served p50 over the in-process p50 at the same batch (goal: <= 1.10 at batch 8);
3. ``--clients`` concurrent gRPC clients sending batch-1 requests, served without and with the dynamic batcher
   (``--queue-delay-us``): requests/s and the latency each client sees (goal: dynamic batching >= 3x).
The server is ``recfx serve`` in its own process (the clients' threads do not share its GIL); clients and server
share this machine's cores. Each line of ``OUT/<model>-<backend>.jsonl`` is one measurement; ``.md`` is the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import recfx
from recfx.models import get_model
from recfx.serving.health import free_ports, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
DTYPE = {torch.float32: "FP32", torch.int64: "INT64", torch.int32: "INT32"}


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples_s)
    return {"p50_ms": statistics.median(ms), "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
            "mean_ms": statistics.fmean(ms), "n": len(ms)}


def in_process(module: recfx.CompiledModule, inputs: tuple[torch.Tensor, ...], n: int) -> dict[str, Any]:
    for _ in range(3):
        module(*inputs)
    times = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        module(*inputs)
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    return {**percentiles(times), "requests_per_s": n / wall}


class ServerProcess:
    """``recfx serve BUNDLE`` in a child process on free loopback ports; stopped with SIGTERM."""

    def __init__(self, bundle: Path, name: str, extra: list[str], log: Path) -> None:
        self.http, self.grpc, metrics = free_ports(3)
        self.name, self._log = name, open(log, "w")  # noqa: SIM115 -- closed in stop()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recfx.tools.cli", "serve", f"{name}={bundle}", "--http-port", str(self.http),
             "--grpc-port", str(self.grpc), "--metrics-port", str(metrics), *extra],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until_ready(f"http://127.0.0.1:{self.http}/v2/models/{name}/ready", timeout_s=300, what="recfx serve",
                         alive=lambda: None if self.proc.poll() is None else f"exit {self.proc.returncode}; see {log}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()


def served(server: ServerProcess, module: recfx.CompiledModule, inputs: tuple[torch.Tensor, ...], clients: int,
           n_per_client: int) -> dict[str, Any]:
    """``clients`` gRPC clients, each sending ``inputs`` ``n_per_client`` times back to back; every answer checked."""
    import tritonclient.grpc as tg

    want = [w.numpy() for w in torch.utils._pytree.tree_leaves(module(*inputs))]
    names = [s.name for s in module.input_specs]
    outs = [s.name for s in module.output_specs]
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client() -> None:
        c = tg.InferenceServerClient(f"127.0.0.1:{server.grpc}")
        ins = []
        for name, x in zip(names, inputs):
            i = tg.InferInput(name, list(x.shape), DTYPE[x.dtype])
            i.set_data_from_numpy(x.numpy())
            ins.append(i)
        for _ in range(3):
            c.infer(server.name, ins)
        barrier.wait()
        local = []
        for _ in range(n_per_client):
            t = time.perf_counter()
            r = c.infer(server.name, ins)
            local.append(time.perf_counter() - t)
            got = [r.as_numpy(o) for o in outs]
            if not all(np.allclose(g, w, rtol=1e-5, atol=1e-5) for g, w in zip(got, want)):
                with lock:
                    errors.append("answer differs from the in-process module")
        c.close()
        with lock:
            times.extend(local)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} answers differ from the in-process module")
    return {**percentiles(times), "requests_per_s": clients * n_per_client / wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dlrm-small")
    p.add_argument("--backend", default="eager")
    p.add_argument("--batch", type=int, default=8, help="the larger batch of the overhead comparison (default 8)")
    p.add_argument("--clients", type=int, default=8, help="concurrent batch-1 clients (default 8)")
    p.add_argument("--requests", type=int, default=200, help="requests per measurement and client group")
    p.add_argument("--queue-delay-us", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, in-process and in the server (OMP_NUM_THREADS); default 1: on a "
                        "shared machine more threads make OpenMP's barriers stall under oversubscription")
    p.add_argument("--out", type=Path, required=True, help="folder for <model>-<backend>.jsonl and .md")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the recfx serve processes
    spec = get_model(args.model)
    module = recfx.compile(spec.build(), spec.example_inputs(2), backend=args.backend)
    scratch = Path(tempfile.mkdtemp())
    bundle = module.save(scratch / "bundle", meta={"model": args.model})
    module = recfx.load(bundle)
    env = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_avg_start": os.getloadavg()[0], "torch": torch.__version__, "recfx": recfx.__version__,
           "model": args.model, "backend": args.backend, "threads": args.threads, "command": " ".join(sys.argv)}
    rows: list[dict[str, Any]] = []

    def record(what: str, batch: int, clients: int, res: dict[str, Any]) -> None:
        row = {**env, "what": what, "batch": batch, "clients": clients, **res}
        rows.append(row)
        print(f"{what:36s} batch {batch:2d} clients {clients:2d}: p50 {res['p50_ms']:8.2f} ms  p99 "
              f"{res['p99_ms']:8.2f} ms  {res['requests_per_s']:8.1f} req/s", flush=True)

    n = args.requests
    # other jobs share this machine: in-process is measured before and after the servers, the faster one counts
    for b in (1, args.batch):
        record("in-process, before", b, 1, in_process(module, spec.example_inputs(b, seed=1), n))
    server = ServerProcess(bundle, "m", ["--no-dynamic-batching", "--max-batch", str(max(args.batch, 8))],
                           scratch / "serve-nodb.log")
    try:
        for b in (1, args.batch):
            record("served, no dynamic batching", b, 1, served(server, module, spec.example_inputs(b, seed=1), 1, n))
        record("served, no dynamic batching", 1, args.clients,
               served(server, module, spec.example_inputs(1, seed=1), args.clients, n // args.clients))
    finally:
        server.stop()
    server = ServerProcess(bundle, "m", ["--max-batch", str(max(args.batch, args.clients)), "--queue-delay-us",
                                         str(args.queue_delay_us)], scratch / "serve-db.log")
    try:
        record(f"served, dynamic batching {args.queue_delay_us} us", 1, args.clients,
               served(server, module, spec.example_inputs(1, seed=1), args.clients, n // args.clients))
    finally:
        server.stop()
    for b in (1, args.batch):
        record("in-process, after", b, 1, in_process(module, spec.example_inputs(b, seed=1), n))
    env["load_avg_end"] = os.getloadavg()[0]

    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}-{args.backend}"
    with open(args.out / f"{tag}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({**row, "load_avg_end": env["load_avg_end"]}) + "\n")
    by = {(r["what"], r["batch"], r["clients"]): r for r in rows}
    inproc = {b: min(by[f"in-process, {when}", b, 1]["p50_ms"] for when in ("before", "after"))
              for b in (1, args.batch)}
    lines = [f"## {args.model} on {args.backend}", "", f"`{env['command']}`; {env['cpus']} CPUs, "
             f"{args.threads} torch thread(s) in each process, load average "
             f"{env['load_avg_start']:.1f} at the start, {env['load_avg_end']:.1f} at the end.", "",
             "| what | batch | clients | p50 ms | p99 ms | requests/s | p50 / best in-process p50 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['p50_ms'] / inproc[r['batch']]:.2f}" if r["clients"] == 1 else ""
        lines.append(f"| {r['what']} | {r['batch']} | {r['clients']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['requests_per_s']:.1f} | {ratio} |")
    nodb = by["served, no dynamic batching", 1, args.clients]["requests_per_s"]
    db = by[f"served, dynamic batching {args.queue_delay_us} us", 1, args.clients]["requests_per_s"]
    overhead = by["served, no dynamic batching", args.batch, 1]["p50_ms"] / inproc[args.batch]
    lines += ["", f"Serving overhead at batch {args.batch}: served p50 / best in-process p50 = {overhead:.2f} "
              "(goal <= 1.10). "
              f"Dynamic batching of {args.clients} batch-1 clients: {db:.1f} vs {nodb:.1f} requests/s unbatched = "
              f"{db / nodb:.2f}x (goal >= 3x).", ""]
    (args.out / f"{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
