"""recfx/backends/tensorrt/ksa_shapes.py: the KSA plugin's shape / type function agrees with the op's fake kernel
(``register_fake``), which Torch-TensorRT's generated plugin uses, and rejects what the op rejects."""

from __future__ import annotations

import pytest
import torch

from recfx.backends.tensorrt.ksa_shapes import ksa_output_dtypes, ksa_output_shapes


@pytest.mark.parametrize("shapes", [((2, 10, 4, 8), (2, 10, 2, 8)), ((1, 17, 3, 16), (1, 17, 3, 16)),
                                    ((3, 5, 8, 4), (3, 5, 1, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_the_ops_fake_kernel(shapes: tuple[tuple[int, ...], tuple[int, ...]], dtype: torch.dtype) -> None:
    q_shape, kv_shape = shapes
    q = torch.empty(q_shape, dtype=dtype, device="meta")
    kv = torch.empty(kv_shape, dtype=dtype, device="meta")
    out, lse = torch.ops.recfx.ksa_attention(q, kv, kv, 4, 1, 1, 0.5)
    assert ksa_output_shapes(q_shape, kv_shape, kv_shape) == (tuple(out.shape), tuple(lse.shape))
    assert ksa_output_dtypes(dtype, dtype, dtype) == (out.dtype, lse.dtype)


def test_symbolic_dims_pass_through() -> None:
    out, lse = ksa_output_shapes(["B", "L", "H", 8], ["B", "L", "Hk", 8], ["B", "L", "Hk", 8])
    assert out == ("B", "L", "H", 8) and lse == ("B", "H", "L")


@pytest.mark.parametrize(("q", "kv", "message"), [
    ((2, 10, 4), (2, 10, 2, 8), "rank 4"),
    ((2, 10, 4, 8), (2, 11, 2, 8), r"differ in L \(dim 1\): 10 vs 11"),
    ((2, 10, 3, 8), (2, 10, 2, 8), r"q's heads \(3\) must be a multiple of k's \(2\)"),
    ((2, 10, 4, 8), (2, 10, 2, 16), r"differ in D \(dim 3\)"),
])
def test_bad_shapes(q: tuple[int, ...], kv: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ksa_output_shapes(q, kv, kv)


def test_bad_dtypes() -> None:
    with pytest.raises(TypeError, match="share a dtype"):
        ksa_output_dtypes(torch.float16, torch.bfloat16, torch.float16)
    with pytest.raises(TypeError, match="takes"):
        ksa_output_dtypes(torch.float64, torch.float64, torch.float64)
