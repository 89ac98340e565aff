"""TensorRT backends: ``trt`` / ``trt-fp8`` in process through Torch-TensorRT, and ONNX -> plan for deployment.

One concern per module: ``availability`` (what is installed), ``partition`` (which nodes TensorRT takes; plain
functions), ``converters`` (recfx's FP8 ops), ``ksa_shapes`` / ``ksa_plugin`` (the KSA plugin), ``profiles``
(optimisation profiles from dynamic dims), ``cache`` (artifact keys), ``dynamo`` (the in-process compile),
``build`` (ONNX -> plan), ``runtime`` (running plans), ``onnx_path`` (``via="onnx"``: compile through a plan),
``backend`` (the registered backends). Only ``backend`` is
imported with the package; the modules that need TensorRT import it when used.
"""

from recfx.backends.tensorrt import backend as _backend  # noqa: F401 - registers trt and trt-fp8
