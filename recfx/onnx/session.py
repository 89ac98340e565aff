"""Run an ONNX file with ONNX Runtime on torch tensors: I/O binding, dynamic shapes, sessions cached per model.

Inputs are bound by pointer (no copy when they are contiguous and on the session's device); outputs are allocated
by ONNX Runtime and handed back to torch through DLPack (no copy). The pytree structure of the outputs is the
graph module's (a tensor, or a tuple of tensors).

Example:
    >>> import tempfile, torch, recfx
    >>> from recfx.onnx.session import OrtRunner
    >>> path = tempfile.mkdtemp() + "/relu.onnx"
    >>> _ = recfx.export_onnx(torch.nn.ReLU().eval(), (torch.randn(2, 3),), path)
    >>> OrtRunner(path, ["input"], ["output_0"])(torch.tensor([[-1.0, 2.0, -3.0]]))
    tensor([[0., 2., 0.]])
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from recfx.onnx.external import check_external_data

log = logging.getLogger(__name__)

#: torch dtypes ONNX Runtime binds directly (numpy has no bfloat16 / float8: those raise a clear error).
_NUMPY_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64,
                torch.int64: np.int64, torch.int32: np.int32, torch.int8: np.int8, torch.uint8: np.uint8,
                torch.bool: np.bool_}

#: ONNX Runtime graph rewrites that are wrong for FP8: ``ReluQuantRewrite`` drops a Relu in front of a
#: QuantizeLinear whose zero point is 0, which clamps negatives for uint8 but not for signed FLOAT8E4M3FN (seen with
#: onnxruntime 1.32 on CPU: dlrm-small with static FP8 activations lost every Relu before a Q).
DISABLED_OPTIMIZERS = ("ReluQuantRewrite",)

_SESSIONS: dict[tuple[str, tuple[str, ...]], Any] = {}
_LOCK = threading.Lock()


def cpu_and_gpu_providers() -> tuple[list[str], list[str]]:
    """(ONNX Runtime providers available here, the subset recfx uses: CUDA first when present, then CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return available, wanted


def providers_for(device: str) -> list[str]:
    """Providers for ``device``: ``"auto"`` (CUDA when ONNX Runtime has it, else CPU), ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: an unknown device, or ``"cuda"`` without ONNX Runtime's CUDA provider (onnxruntime-gpu).
    """
    available, wanted = cpu_and_gpu_providers()
    if device == "auto":
        return wanted
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ValueError(f"provider 'cuda' needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime has "
                             f"{available}. Use provider='cpu' or install onnxruntime-gpu.")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"provider must be 'auto', 'cpu' or 'cuda', got {device!r}")


def session_for(path: str | Path, providers: Sequence[str], key: str | None = None) -> Any:
    """An ``InferenceSession`` of ``path`` with ``providers``, created once per (key or file hash, providers).

    Raises:
        ExternalDataError: the file's external data lies outside its folder (checked before ONNX Runtime reads it).
    """
    import onnxruntime as ort

    check_external_data(onnx.load(str(path), load_external_data=False), Path(path).parent)
    key = key or file_hash(path)
    cache_key = (key, tuple(providers))
    with _LOCK:
        session = _SESSIONS.get(cache_key)
        if session is None:
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only
            session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers),
                                           disabled_optimizers=list(DISABLED_OPTIMIZERS))
            _SESSIONS[cache_key] = session
            log.info("ONNX Runtime session for %s on %s", path, session.get_providers())
    return session


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_digest(path: str | Path) -> str:
    """SHA-256 of an ONNX file's bytes, followed by its external-data file's (``<file>.data``) when there is one."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    digest = file_hash(path)
    return f"{digest}+{file_hash(data)}" if data.is_file() else digest


def clear_sessions() -> None:
    """Forget every cached session (they are rebuilt on next use)."""
    with _LOCK:
        _SESSIONS.clear()


class OrtRunner:
    """Call an ONNX model with torch tensors (positional, in graph-input order) and get torch tensors back.

    Args:
        path: the ``.onnx`` file.
        input_names / output_names: the graph's input and output names, in order.
        out_spec: pytree spec of the outputs (``None``: one output -> a tensor, several -> a tuple).
        providers: ONNX Runtime providers (default: CUDA when available, then CPU).
        key: cache key of the session (default: the file's SHA-256).
    """

    def __init__(self, path: str | Path, input_names: Sequence[str], output_names: Sequence[str],
                 out_spec: Any = None, providers: Sequence[str] | None = None, key: str | None = None) -> None:
        self.path = Path(path)
        self.session = session_for(path, providers or cpu_and_gpu_providers()[1], key)
        graph_inputs = [i.name for i in self.session.get_inputs()]
        graph_outputs = [o.name for o in self.session.get_outputs()]
        if list(input_names) != graph_inputs or list(output_names) != graph_outputs:
            raise ValueError(f"{path} has inputs {graph_inputs} and outputs {graph_outputs}; expected "
                             f"{list(input_names)} and {list(output_names)}")
        self.input_names, self.output_names, self.out_spec = list(input_names), list(output_names), out_spec
        self.on_cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        self._warned = False

    def _device_of(self, x: torch.Tensor) -> torch.Tensor:
        if self.on_cuda or x.device.type == "cpu":
            return x
        if not self._warned:
            log.warning("ONNX Runtime runs on %s here; copying %s inputs to the CPU and the outputs back",
                        self.session.get_providers()[0], x.device)
            self._warned = True
        return x.cpu()

    def __call__(self, *args: torch.Tensor) -> Any:
        if len(args) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(args)}")
        binding = self.session.io_binding()
        keep = []
        for name, x in zip(self.input_names, args):
            if x.dtype not in _NUMPY_TYPES:
                raise TypeError(f"input {name!r} is {x.dtype}; ONNX Runtime binds "
                                f"{', '.join(str(d) for d in _NUMPY_TYPES)}")
            x = self._device_of(x).contiguous()
            keep.append(x)
            kind = "cuda" if x.device.type == "cuda" else "cpu"
            binding.bind_input(name, kind, x.device.index or 0, _NUMPY_TYPES[x.dtype], tuple(x.shape), x.data_ptr())
        out_device = args[0].device if args else torch.device("cpu")
        for name in self.output_names:
            binding.bind_output(name, "cuda" if self.on_cuda else "cpu", (out_device.index or 0) if self.on_cuda else 0)
        self.session.run_with_iobinding(binding)
        outputs = [_to_torch(v).to(out_device) for v in binding.get_outputs()]
        if self.out_spec is not None:
            return torch.utils._pytree.tree_unflatten(outputs, self.out_spec)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _to_torch(value: Any) -> torch.Tensor:
    if hasattr(value, "__dlpack__"):
        try:
            return torch.from_dlpack(value)
        except (RuntimeError, TypeError, BufferError):  # an older onnxruntime without DLPack export
            pass
    return torch.from_numpy(value.numpy())
