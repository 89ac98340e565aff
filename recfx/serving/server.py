"""``serve``: compiled modules on NVIDIA Triton Inference Server, started in this process through PyTriton.

PyTriton launches the ``tritonserver`` binary that its wheel ships and binds each module as a Python-backend model
whose requests come back to this process: one Triton model per module, its inputs and outputs (names, data types,
dims with the dynamic ones as -1) from the module's specs (:mod:`recfx.serving.signature`), Triton's dynamic batcher
and N model instances from :class:`~recfx.serving.config.ModelServing`, HTTP, gRPC and metrics on the address of
:class:`~recfx.serving.config.ServerAddress` (loopback by default).

Triton checks every request against that signature before it is queued (data type, rank, static dims, missing
inputs, batch size <= ``max_batch``) and answers a bad one with 400 and a message naming the input; such a request
never reaches a batch. The module's own check (:meth:`CompiledModule.check_inputs`) runs again on each request
before concatenation, for what Triton cannot express (two inputs sharing a named dim). An exception in the model
answers the requests of that batch with an error (PyTriton reports it as 500 with the message) and the server keeps
serving.

PyTriton is an optional dependency (the ``serve`` extra); it is imported when a server starts, never by ``import
recfx``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sysconfig
import threading
import types
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfx.errors import RecfxError
from recfx.runtime.compiled import CompiledModule
from recfx.serving.config import ModelServing, ServerAddress
from recfx.serving.signature import TritonSignature, signature, unbatched_reason

log = logging.getLogger(__name__)

#: Triton model names: a letter or digit, then letters, digits, '_', '.', '-'
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: on stop, how long Triton waits for in-flight requests and open client connections before it exits anyway
EXIT_TIMEOUT_S = 10
#: starts of tritonserver tried when one fails transiently (a model's Python stub racing PyTriton's handshake socket:
#: "Connection refused" while the model initialises, seen under load)
START_ATTEMPTS = 2
_TRANSIENT_START = re.compile(r"handshake|Connection refused")
_INSTALL_HINT = ("install the serve extra (pip install 'recfx[serve]'; it pins numpy<2, so `make serve-venv` puts "
                 "it in its own .venv-serve)")


def require_pytriton() -> types.ModuleType:
    """Import PyTriton, or raise a ``RecfxError`` that says how to install it."""
    try:
        import pytriton.triton
    except ImportError as err:
        raise RecfxError(f"serving needs PyTriton (nvidia-pytriton), which is not importable here ({err}); "
                         f"{_INSTALL_HINT}") from None
    return pytriton.triton


def python_backend_libdir() -> str:
    """The folder holding this interpreter's shared ``libpython``, which Triton's Python-backend stub must load.

    The stub links ``libpython3.X.so.1.0`` by name; the dynamic loader would otherwise take the system's copy, which
    can be another build than this interpreter's standard library (then the stub fails at model load, e.g. ``RLock``
    without ``_recursion_count``). Serving puts this folder first on ``LD_LIBRARY_PATH`` of ``tritonserver``.

    Raises:
        RecfxError: this interpreter has no shared libpython (a static build): the stub cannot use its stdlib.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if not (libdir and soname and (Path(libdir) / soname).is_file()):
        raise RecfxError(f"Triton's Python-backend stub needs this interpreter's shared libpython ({soname or 'none'}"
                         f" in LIBDIR {libdir or 'unset'}), which is missing: this Python was built without "
                         "--enable-shared. Serve from a Python built with --enable-shared (pyenv: "
                         "PYTHON_CONFIGURE_OPTS=--enable-shared; distribution packages are)")
    return libdir


@contextlib.contextmanager
def python_backend_env() -> Iterator[None]:
    """Put :func:`python_backend_libdir` first on ``LD_LIBRARY_PATH`` while ``tritonserver`` is launched."""
    libdir = python_backend_libdir()
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = libdir + (f":{old}" if old else "")
    try:
        yield
    finally:
        if old is None:
            del os.environ["LD_LIBRARY_PATH"]
        else:
            os.environ["LD_LIBRARY_PATH"] = old


def check_ports_free(address: ServerAddress) -> None:
    """Raise a ``ValueError`` naming the port when one of the address's ports is taken (Triton itself would only
    time out after a minute). Another process can still take a port between this check and Triton's bind."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    for what, port in (("HTTP", address.http_port), ("gRPC", address.grpc_port), ("metrics", address.metrics_port)):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is no conflict
            try:
                sock.bind((address.host, port))
            except OSError as err:
                flag = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}[what]
                raise ValueError(f"the {what} port {port} on {address.host} is not free ({err.strerror}); stop what "
                                 f"holds it or choose another ({flag})") from None


def _flat_outputs(out: Any) -> list[torch.Tensor]:
    return list(torch.utils._pytree.tree_leaves(out))


class ServedModel:
    """One compiled module behind a Triton model: turns a list of requests into one call and splits the outputs.

    Args:
        name: the Triton model name.
        module: the compiled module (compiled here or loaded from a bundle).
        serving: batching and instances.

    Raises:
        ValueError: a bad model name, or dynamic batching asked of a module that cannot be batched.
        TypeError: an input or output dtype Triton (or numpy, for bfloat16) cannot carry.
    """

    def __init__(self, name: str, module: CompiledModule, serving: ModelServing) -> None:
        if not MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} must start with a letter or digit and hold only letters, digits, "
                             "'_', '.', '-'")
        self.name, self.module, self.serving = name, module, serving
        self.signature: TritonSignature = signature(module)
        if serving.dynamic_batching and not self.signature.batched:
            raise ValueError(f"model {name!r} cannot be dynamically batched: {unbatched_reason(module)}; or serve "
                             "it without dynamic batching")
        bf16 = [t.name for t in (*self.signature.inputs, *self.signature.outputs) if t.dtype == torch.bfloat16]
        if bf16:
            raise TypeError(f"model {name!r}: {bf16} are bfloat16, which PyTriton cannot carry (numpy has no "
                            "bfloat16); compile with float32 or float16 inputs and outputs, or export a Triton "
                            "repository (recfx export-triton)")
        self._device = next((s.device for s in module.input_specs if s.device is not None), torch.device("cpu"))

    @property
    def max_batch_size(self) -> int:
        return self.serving.max_batch if self.signature.batched else 0

    def _tensors(self, request: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        arrays = [request[t.name] for t in self.signature.inputs]
        # PyTriton hands read-only views of shared memory at any alignment: copy them into torch's own (aligned)
        # buffers, so that the GEMMs take the same code path (and round the same) as an in-process call
        return tuple(torch.tensor(a, device=self._device) for a in arrays)

    def infer(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Run one batch of Triton requests (PyTriton ``Request`` objects, read by input name)."""
        per_request = [self._tensors(r) for r in requests]
        for args in per_request:
            self.module.check_inputs(args)  # recfx's message, before one bad request is mixed into a batch
        if not self.signature.batched or len(per_request) == 1:
            return [self._run(args) for args in per_request]
        sizes = [args[0].shape[0] for args in per_request]
        outs = self._call(tuple(torch.cat(parts) for parts in zip(*per_request)))
        split = [o.split(sizes) for o in outs]  # every output's dim 0 is the batch dim (signature.batched)
        return [{t.name: parts[i].cpu().numpy() for t, parts in zip(self.signature.outputs, split)}
                for i in range(len(sizes))]

    def _call(self, args: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        outs = _flat_outputs(self.module(*args))
        if len(outs) != len(self.signature.outputs):
            raise RecfxError(f"model {self.name!r} returned {len(outs)} tensors, its specs list "
                             f"{len(self.signature.outputs)}")
        return outs

    def _run(self, args: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
        return {t.name: o.cpu().numpy() for t, o in zip(self.signature.outputs, self._call(args))}


class Server:
    """A running Triton server holding recfx models; :func:`serve` starts one. Stop it with :meth:`stop` (or use
    it as a context manager); :meth:`wait` blocks until SIGINT/SIGTERM, then stops it gracefully (in-flight
    requests finish)."""

    def __init__(self, models: Mapping[str, CompiledModule], serving: ModelServing, address: ServerAddress, *,
                 triton_log: Path | None = None) -> None:
        if not models:
            raise ValueError("serve needs at least one model")
        self.serving, self.address, self.triton_log = serving, address, triton_log
        self.models = {name: ServedModel(name, m, serving) for name, m in models.items()}
        self._triton: Any = None

    def start(self) -> Server:
        """Launch ``tritonserver``, bind every model and wait until they are ready. A start that fails because a
        model's Python stub could not reach PyTriton's handshake socket is tried once more (logged as a warning).

        Raises:
            RecfxError: PyTriton is missing, the interpreter has no shared libpython, or Triton did not start (the
                message carries PyTriton's).
            ValueError: a port of the address is taken.
        """
        triton_mod = require_pytriton()
        for attempt in range(1, START_ATTEMPTS + 1):
            check_ports_free(self.address)
            try:
                triton = self._launch(triton_mod)
                break
            except RecfxError as exc:
                if attempt == START_ATTEMPTS or not _TRANSIENT_START.search(str(exc)):
                    raise
                log.warning("Triton did not start (attempt %d of %d: a model's Python stub could not reach "
                            "PyTriton's handshake socket); starting it again", attempt, START_ATTEMPTS)
        self._triton = triton
        a = self.address
        log.info("serving %s at %s (HTTP), %s (gRPC), %s", ", ".join(self.models), a.http_url, a.grpc_url,
                 a.metrics_url)
        return self

    def _launch(self, triton_mod: Any) -> Any:
        """One start of ``tritonserver`` with every model bound; stopped again if anything fails."""
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        a = self.address
        config = triton_mod.TritonConfig(http_address=a.host, http_port=a.http_port, grpc_address=a.host,
                                         grpc_port=a.grpc_port, metrics_address=a.host, metrics_port=a.metrics_port,
                                         allow_gpu_metrics=False, exit_timeout_secs=EXIT_TIMEOUT_S,
                                         log_file=self.triton_log)
        with python_backend_env():
            triton = triton_mod.Triton(config=config)
            try:
                triton.__enter__()
                for m in self.models.values():
                    batcher = DynamicBatcher(max_queue_delay_microseconds=self.serving.queue_delay_us) \
                        if self.serving.dynamic_batching else None
                    triton.bind(model_name=m.name, infer_func=[m.infer] * self.serving.instances,
                                inputs=[Tensor(name=t.name, dtype=_numpy_dtype(t.dtype), shape=t.dims)
                                        for t in m.signature.inputs],
                                outputs=[Tensor(name=t.name, dtype=_numpy_dtype(t.dtype), shape=t.dims)
                                         for t in m.signature.outputs],
                                config=ModelConfig(batching=m.signature.batched, max_batch_size=m.max_batch_size,
                                                   batcher=batcher),
                                strict=True)
                triton.run()
            except Exception as exc:
                triton.stop()
                if isinstance(exc, (ValueError, TypeError, RecfxError)):
                    raise
                raise RecfxError(f"Triton did not start: {type(exc).__name__}: {exc}") from exc
        return triton

    @property
    def running(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def stop(self) -> None:
        """Stop the server (in-flight requests finish first); a stopped server stays stopped."""
        triton, self._triton = self._triton, None
        if triton is not None:
            triton.stop()

    def wait(self, poll_s: float = 1.0) -> None:
        """Serve until SIGINT or SIGTERM (or until Triton dies), then stop. Call from the main thread.

        Raises:
            RecfxError: Triton or a model's proxy exited on its own.
        """
        stop = threading.Event()
        handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.wait(poll_s):
                if not self.running:
                    raise RecfxError("tritonserver or a model's proxy exited; see the log above")
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.stop()

    def __enter__(self) -> Server:
        return self if self._triton is not None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return torch.empty((), dtype=dtype).numpy().dtype.type


def serve(models: CompiledModule | Mapping[str, CompiledModule], serving: ModelServing | None = None,
          address: ServerAddress | None = None, *, triton_log: str | os.PathLike[str] | None = None) -> Server:
    """Start NVIDIA Triton Inference Server (through PyTriton) serving compiled modules; returns it running.

    Args:
        models: one module (served as ``model``) or model name -> module; a module loaded with :func:`recfx.load`
            serves without recompiling.
        serving: batching and instances (default: dynamic batching up to 8, one instance).
        address: host and ports (default 127.0.0.1, HTTP 8000, gRPC 8001, metrics 8002).
        triton_log: a file for ``tritonserver``'s own log (default: its standard output).

    Returns:
        the running :class:`Server` (a context manager; ``wait()`` serves until SIGINT/SIGTERM).

    Raises:
        RecfxError: PyTriton is not installed, or Triton did not start.
        ValueError / TypeError: a bad model name, or a module Triton cannot carry (see :class:`ServedModel`).

    Example (needs the ``serve`` extra)::

        >>> import recfx, recfx.serving, torch
        >>> fast = recfx.compile(torch.nn.Linear(4, 2).eval(), (torch.randn(2, 4),), backend="eager")
        >>> with recfx.serving.serve({"linear": fast}) as server:  # doctest: +SKIP
        ...     print(server.address.http_url)
        http://127.0.0.1:8000
    """
    if isinstance(models, CompiledModule):
        models = {"model": models}
    log_path = Path(triton_log) if triton_log is not None else None
    return Server(models, serving or ModelServing(), address or ServerAddress(), triton_log=log_path).start()
