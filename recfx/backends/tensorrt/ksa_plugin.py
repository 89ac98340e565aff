"""``recfx::ksa_attention`` as a TensorRT plugin, in two registrations (both need TensorRT >= 10.7).

* In process (``trt`` backends): Torch-TensorRT generates the plugin and its converter from the ``torch.library``
  op itself (``torch_tensorrt.dynamo.conversion.plugins.custom_op``): the output shapes come from the op's
  ``register_fake`` through symbolic shapes, the implementation calls the op (its Triton kernel on CUDA) on the
  stream TensorRT gives. The partition rule (``partition.ksa_rule``) is its capability validator.
* For engines built from ONNX (``recfx build-engine``): a quickly deployable plugin (``tensorrt.plugin``) under the
  id ``recfx::KsaAttention``, the name / namespace / version of the exported node
  (``recfx.onnx.translate_ksa``). Its shape function is :func:`ksa_shapes.ksa_output_shapes`. Its implementation
  is JIT (Python, calling the op), so engines that contain it need Python and recfx at run time; an AOT
  implementation compiled from the Triton kernel is not written yet (docs/tensorrt.md).

``tensorrt.plugin`` is not covered by tensorrt-stubs 10.13, so its names here are typed ``Any`` and were checked
against TensorRT's documentation only.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from recfx.backends.tensorrt.ksa_shapes import ksa_output_shapes
from recfx.backends.tensorrt.partition import ksa_rule
from recfx.onnx.translate_ksa import KSA_PLUGIN, PLUGIN_NAMESPACE, PLUGIN_VERSION

#: The op the in-process plugin is generated from.
KSA_OP = "recfx::ksa_attention"
#: The quickly deployable plugin id the ONNX parser finds for the exported node.
ONNX_PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{KSA_PLUGIN}"
#: tensorrt.plugin registers every plugin as version "1"; the exported node must say the same.
QDP_VERSION = "1"
assert PLUGIN_VERSION == QDP_VERSION, "the exported KsaAttention node's plugin_version must match tensorrt.plugin's"

_registered: set[str] = set()


def register_torch_plugin() -> None:
    """Generate the in-process plugin and converter for ``recfx::ksa_attention`` (once per process)."""
    if KSA_OP in _registered:
        return
    from torch_tensorrt.dynamo.conversion.plugins import custom_op

    custom_op(KSA_OP, capability_validator=lambda node, settings: ksa_rule(node) is None,
              supports_dynamic_shapes=True)
    _registered.add(KSA_OP)


def register_onnx_plugin() -> None:
    """Register ``recfx::KsaAttention`` with TensorRT's plugin registry (once per process), for the ONNX parser
    and for deserialising plans that contain it."""
    if ONNX_PLUGIN_ID in _registered:
        return
    trt = importlib.import_module("tensorrt")
    trtp: Any = importlib.import_module("tensorrt.plugin")

    @trtp.register(ONNX_PLUGIN_ID)
    def ksa_desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, chunk_size: int, summaries: int,
                 window: int, scale: float) -> tuple[trtp.TensorDesc, trtp.TensorDesc]:
        _, lse_shape = ksa_output_shapes(list(q.shape_expr), list(k.shape_expr), list(v.shape_expr))
        return q.like(), trtp.from_shape_expr(lse_shape, dtype=trt.float32)

    @trtp.impl(ONNX_PLUGIN_ID)
    def ksa_impl(q: trtp.Tensor, k: trtp.Tensor, v: trtp.Tensor, chunk_size: int, summaries: int, window: int,
                 scale: float, outputs: tuple[trtp.Tensor, ...], stream: int) -> None:
        run_ksa([torch.as_tensor(t, device="cuda") for t in (q, k, v)],
                [torch.as_tensor(t, device="cuda") for t in outputs], (chunk_size, summaries, window, scale), stream)

    _registered.add(ONNX_PLUGIN_ID)


def run_ksa(inputs: list[torch.Tensor], outputs: list[torch.Tensor], attrs: tuple[Any, ...], stream: int) -> None:
    """Run ``recfx::ksa_attention`` on TensorRT's stream and write the plugin's two output buffers."""
    q, k, v = inputs
    chunk_size, summaries, window, scale = (_scalar(a) for a in attrs)
    with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
        out, lse = torch.ops.recfx.ksa_attention(q, k, v, int(chunk_size), int(summaries), int(window), float(scale))
        outputs[0].copy_(out)
        outputs[1].copy_(lse.to(outputs[1].dtype))


def _scalar(value: Any) -> Any:
    """A plugin attribute as a Python scalar (the ONNX parser may hand over 1-element arrays)."""
    return value.reshape(()).item() if hasattr(value, "reshape") else value
