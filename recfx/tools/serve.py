"""``recfx serve``: serve models or bundles on NVIDIA Triton Inference Server (PyTriton), until SIGINT/SIGTERM.

Each MODEL_OR_BUNDLE becomes one Triton model: a bundle folder (``recfx compile --out``) is loaded without
recompiling; a model (registered name or ``package.module:factory``) is compiled on ``--backend`` first. Exit status:
0 after a graceful stop, 2 bad options or a server that cannot start (docs/serving.md).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from recfx.tools.commands import command

if TYPE_CHECKING:
    from recfx.runtime.compiled import CompiledModule
    from recfx.serving import ModelServing
    from recfx.serving.server import ServedModel


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``serve`` and ``export-triton`` share: what to serve and how Triton batches it."""
    parser.add_argument("models", nargs="+", metavar="MODEL_OR_BUNDLE",
                        help="a bundle folder (recfx compile --out), a registered model name or "
                             "package.module:factory; NAME=MODEL_OR_BUNDLE names the Triton model")
    parser.add_argument("--backend", default="auto",
                        help="backend to compile models on (default auto; bundles keep theirs)")
    parser.add_argument("--instances", type=int, default=1, metavar="N", help="model instances (default 1)")
    parser.add_argument("--max-batch", type=int, default=8, metavar="B",
                        help="largest request batch and dynamic batch (default 8)")
    parser.add_argument("--queue-delay-us", type=int, default=0, metavar="U",
                        help="how long the dynamic batcher may hold a request for others (default 0)")
    parser.add_argument("--no-dynamic-batching", action="store_true",
                        help="run every request on its own (no dynamic batcher)")


def serving_options(args: argparse.Namespace) -> ModelServing:
    from recfx.serving import ModelServing

    return ModelServing(max_batch=args.max_batch, dynamic_batching=not args.no_dynamic_batching,
                        queue_delay_us=args.queue_delay_us, instances=args.instances)


def load_models(refs: list[str], backend: str) -> dict[str, CompiledModule]:
    """Model name -> compiled module for each MODEL_OR_BUNDLE (bundles loaded, models compiled on ``backend``).

    Raises:
        ValueError: two models would get the same name, or a reference is neither a bundle nor a model.
    """
    import recfx
    from recfx.models.resolve import resolve_model
    from recfx.runtime.bundle import MANIFEST

    modules: dict[str, CompiledModule] = {}
    for ref in refs:
        name, _, target = ref.rpartition("=")
        if (Path(target) / MANIFEST).is_file():
            module = recfx.load(target)
            name = name or str(module.bundle_meta.get("model") or Path(target).resolve().name)
        else:
            model_name, model, inputs, spec = resolve_model(target)
            dims = {k: dict(v) for k, v in spec.dynamic_dims.items()} if spec else {}
            module = recfx.compile(model, inputs, backend=backend, config=recfx.CompileConfig(dynamic_dims=dims))
            name = name or model_name
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        if name in modules:
            raise ValueError(f"two models are named {name!r}; name them apart with NAME=MODEL_OR_BUNDLE")
        modules[name] = module
    return modules


def warm_up_line(served: ServedModel) -> str:
    """Call a served module at every batch size Triton may send it (1 to ``--max-batch``) before the server starts,
    so that no request pays a batch-1 recompile or a CUDA-graph capture (:meth:`CompiledModule.warm_up`); one line
    saying what happened. A module that fails there is reported, not raised: its first requests will say why."""
    name, module = served.name, served.module
    if not served.signature.batched:
        return f"model {name}: not warmed up (served unbatched: one request per call, at its own shapes)"
    if module.example_inputs is None:
        return (f"model {name}: loaded from a bundle, which keeps no example inputs to warm it up with; the first "
                "request at each batch size pays its lazy work (a CUDA-graph capture where the backend uses them)")
    try:
        seconds = module.warm_up(batches=range(1, served.max_batch_size + 1))
    except Exception as err:  # noqa: BLE001 (reported, not raised: the server starts as it did before warm-ups)
        notes = " ".join(getattr(err, "__notes__", []))
        return f"model {name}: not warmed up: {type(err).__name__}: {err} {notes}".rstrip()
    return f"model {name}: warmed up at batches 1-{served.max_batch_size} in {sum(seconds.values()):.1f} s"


@command("serve", help="serve models or bundles on NVIDIA Triton Inference Server (dynamic batching, instances)")
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_serving_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address for HTTP, gRPC and metrics (default 127.0.0.1; 0.0.0.0 exposes every interface)")
    parser.add_argument("--http-port", type=int, default=8000, help="default 8000")
    parser.add_argument("--grpc-port", type=int, default=8001, help="default 8001")
    parser.add_argument("--metrics-port", type=int, default=8002, help="default 8002")


def run(args: argparse.Namespace) -> int:
    from recfx.serving import ServerAddress
    from recfx.serving.server import Server, require_pytriton

    require_pytriton()  # before compiling anything
    address = ServerAddress(args.host, args.http_port, args.grpc_port, args.metrics_port)
    serving = serving_options(args)
    modules = load_models(args.models, args.backend)
    server = Server(modules, serving, address)  # checks what Triton can carry before the warm-up's time is spent
    for served in server.models.values():
        print(warm_up_line(served), flush=True)
    server.start()
    for name, m in server.models.items():
        sig = m.signature
        ins = ", ".join(f"{t.name}: {t.triton_dtype}{list(t.dims)}" for t in sig.inputs)
        print(f"model {name} ({m.module.backend}, max_batch_size {m.max_batch_size}): {ins}", flush=True)
    print(f"serving on {address.http_url} (HTTP), {address.grpc_url} (gRPC), {address.metrics_url}; "
          "Ctrl+C or SIGTERM stops", flush=True)
    server.wait()
    print("stopped", flush=True)
    return 0
