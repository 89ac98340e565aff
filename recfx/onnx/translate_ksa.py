"""ONNX forms of ``recfx::ksa_attention``: a TensorRT plugin node, or standard ONNX ops.

Plugin form (default): one node ``trt.plugins::KsaAttention(q, k, v) -> (out, lse)`` with attributes
``chunk_size``, ``summaries``, ``window`` (ints), ``scale`` (float) and TensorRT's plugin attributes
``plugin_version="1"``, ``plugin_namespace="recfx"``. TensorRT's ONNX parser looks unknown op types up in its plugin
registry by ``(op_type, plugin_version, plugin_namespace)``; ``op_type`` is never a standard ONNX op name.
ONNX Runtime has no kernel for it.

Decomposed form (``ksa_as_ops``): the op's reference (``recfx.kernels.ksa_reference.prefill_reference``: mask from
the positions, masked softmax attention, log-sum-exp) is traced into aten ops before the ONNX translation, so any
runtime can run the file.
"""

from __future__ import annotations

from typing import Any

from onnx.defs import OpSchema
from onnxscript import values

#: The domain of recfx's TensorRT plugin nodes (TensorRT ignores it; ONNX needs a non-standard one).
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_NAMESPACE = "recfx"
PLUGIN_VERSION = "1"
KSA_PLUGIN = "KsaAttention"


def _schema() -> OpSchema:
    param, attr, kind = OpSchema.FormalParameter, OpSchema.Attribute, OpSchema.AttrType
    return OpSchema(
        KSA_PLUGIN, PLUGIN_DOMAIN, 1,
        doc="Kwai Summary Attention on the interleaved [B, L, H, D] layout (recfx::ksa_attention).",
        inputs=[param("q", "T"), param("k", "T"), param("v", "T")],
        outputs=[param("out", "T"), param("lse", "L")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"], ""),
                          ("L", ["tensor(float)", "tensor(double)"], "")],
        attributes=[attr("chunk_size", kind.INT, "text tokens per chunk (k)"),
                    attr("summaries", kind.INT, "summary tokens per chunk (S)"),
                    attr("window", kind.INT, "sliding window in chunks (W)"),
                    attr("scale", kind.FLOAT, "softmax scale"),
                    attr("plugin_version", kind.STRING, "TensorRT plugin version"),
                    attr("plugin_namespace", kind.STRING, "TensorRT plugin namespace")],
    )


_KSA_OP = values.Op(values.Opset(PLUGIN_DOMAIN, 1), KSA_PLUGIN, _schema())


def ksa_attention_plugin(q: Any, k: Any, v: Any, chunk_size: int, summaries: int, window: int,
                         scale: float) -> tuple[Any, Any]:
    """``recfx::ksa_attention`` -> ``trt.plugins::KsaAttention`` (plugin_version "1", plugin_namespace "recfx")."""
    return _KSA_OP(q, k, v, chunk_size=int(chunk_size), summaries=int(summaries), window=int(window),
                   scale=float(scale), plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)


def ksa_attention_reference(q: Any, k: Any, v: Any, chunk_size: int, summaries: int, window: int,
                            scale: float) -> tuple[Any, Any]:
    """The aten decomposition of ``recfx::ksa_attention`` used for ``ksa_as_ops`` (the op's own reference)."""
    from recfx.kernels.ksa_reference import prefill_reference

    return prefill_reference(q, k, v, chunk_size, summaries, window, scale)
