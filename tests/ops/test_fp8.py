"""recfx::quantize_fp8 / dequantize_fp8 / per-token / groups / blocks vs an independent float64 reference, opcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import recfx  # noqa: F401  (defines the ops)
from recfx.analysis.numerics import sqnr_db
from recfx.ops import fp8 as fp8_ops
from recfx.ops.fp8_testing import opcheck_fp8, reference_codes, run_examples
from tests.memory import peak_new_bytes

ops = torch.ops.recfx
FP8 = torch.float8_e4m3fn


def _bits(q: torch.Tensor) -> np.ndarray:
    return q.view(torch.uint8).numpy()


def _special_values() -> torch.Tensor:
    values = torch.from_numpy(np.arange(0x7F, dtype=np.uint8)).view(FP8).float()
    mids = (values[1:] + values[:-1]) / 2  # exact ties between neighbours: round half to even
    big = torch.tensor([447.0, 448.0, 449.0, 463.9, 464.0, 464.1, 500.0, 1e6, float("inf")])
    tiny = torch.tensor([0.0, 2.0**-10, 2.0**-9, 1.5 * 2.0**-9, 2.0**-11, 1e-30])
    pos = torch.cat([values, mids, big, tiny])
    return torch.cat([pos, -pos])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_matches_float64_reference_bit_exactly(dtype: torch.dtype) -> None:
    x = torch.cat([_special_values(), torch.randn(4096) * 100, torch.randn(4096) * 1e-3]).to(dtype)
    x = x[torch.isfinite(x) | torch.isinf(x)]
    for scale in (torch.tensor(1.0), torch.tensor(0.37), torch.tensor(3.0e-3)):
        q = ops.quantize_fp8(x, scale)
        assert q.dtype == FP8
        np.testing.assert_array_equal(_bits(q), reference_codes(x.float().numpy(), scale.numpy()))


def test_quantize_saturates_and_keeps_nan() -> None:
    q = ops.quantize_fp8(torch.tensor([1e9, -1e9, float("inf"), float("-inf"), float("nan")]), torch.tensor(1.0))
    assert q.float()[:4].tolist() == [448.0, -448.0, 448.0, -448.0]
    assert torch.isnan(q.float()[4])


def test_per_channel_and_per_token_scales_broadcast() -> None:
    x = torch.randn(6, 40) * torch.logspace(-3, 3, 6)[:, None]
    scale = torch.rand(6, 1) + 0.1
    np.testing.assert_array_equal(_bits(ops.quantize_fp8(x, scale)), reference_codes(x.numpy(), scale.numpy()))
    with pytest.raises(ValueError, match="does not broadcast"):
        ops.quantize_fp8(x, torch.ones(5, 1))
    with pytest.raises(TypeError, match="float32"):
        ops.quantize_fp8(x, torch.ones(6, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be"):
        ops.quantize_fp8(torch.ones(3, dtype=torch.int64), torch.tensor(1.0))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_is_q_times_scale(out_dtype: torch.dtype) -> None:
    q = (torch.randn(8, 33) * 50).to(FP8)
    scale = torch.rand(8, 1) * 10
    got = ops.dequantize_fp8(q, scale, out_dtype)
    want = torch.from_numpy(q.double().numpy() * scale.double().numpy()).float()  # exact product, rounded once
    assert got.dtype == out_dtype
    torch.testing.assert_close(got, want.to(out_dtype), rtol=0, atol=0)


def test_per_token_scale_and_all_zero_rows() -> None:
    x = torch.randn(3, 5, 64) * 7
    x[1, 2] = 0.0
    q, s = ops.quantize_fp8_per_token(x)
    amax = x.double().abs().amax(-1, keepdim=True).clamp(min=1e-12)
    torch.testing.assert_close(s, (amax / 448).float(), rtol=0, atol=0)  # float64 formula rounded once
    assert s.shape == (3, 5, 1) and bool((s > 0).all())
    np.testing.assert_array_equal(_bits(q), reference_codes(x.numpy(), s.numpy()))
    assert q[1, 2].float().abs().sum() == 0
    assert q.float().abs().amax(-1).max() == 448.0  # the row maximum maps to 448 exactly
    recon = ops.dequantize_fp8(q, s, torch.float32)
    assert bool(torch.isfinite(recon).all()) and recon[1, 2].abs().sum() == 0


def test_all_zero_tensor_gets_a_positive_scale() -> None:
    scale = fp8_ops.scale_from_amax(torch.zeros(()))
    assert float(scale) > 0
    q = ops.quantize_fp8(torch.zeros(4, 4), scale)
    assert ops.dequantize_fp8(q, scale, torch.float32).abs().sum() == 0


def test_groups_and_blocks_match_the_reference() -> None:
    x = torch.randn(4, 300) * torch.linspace(0.1, 30, 300)  # 3 groups of 128, the last one partial (44)
    q, s = ops.quantize_fp8_groups(x, 128)
    assert s.shape == (4, 3)
    for g, (k0, k1) in enumerate(((0, 128), (128, 256), (256, 300))):
        amax = x[:, k0:k1].double().abs().amax(-1).clamp(min=1e-12)
        torch.testing.assert_close(s[:, g], (amax / 448).float(), rtol=0, atol=0)
        np.testing.assert_array_equal(_bits(q[:, k0:k1]), reference_codes(x[:, k0:k1].numpy(), s[:, g : g + 1].numpy()))
    recon = ops.dequantize_fp8_blocks(q, s, [128], torch.float32)
    assert sqnr_db(x, recon) > 25


def test_block_weights_and_scale_shape_errors() -> None:
    w = torch.randn(200, 300)
    w_q, w_s = fp8_ops.quantize_weight(w, "block", 128)
    assert w_s.shape == (2, 3)
    amax = w[128:, 256:].abs().max()
    assert float(w_s[1, 2]) == float((amax.double() / 448).float())
    recon = ops.dequantize_fp8_blocks(w_q, w_s, [128, 128], torch.float32)
    assert sqnr_db(w, recon) > 25
    with pytest.raises(ValueError, match="expected \\[2, 3\\]"):
        ops.dequantize_fp8_blocks(w_q, torch.ones(2, 2), [128, 128], torch.float32)
    with pytest.raises(ValueError, match="granularity"):
        fp8_ops.quantize_weight(w, "rows")


def test_quantize_weight_does_not_touch_the_weight() -> None:
    w = torch.randn(8, 16)
    before = w.clone()
    w_q, s = fp8_ops.quantize_weight(w, "per_tensor")
    assert torch.equal(w, before) and s.shape == () and w_q.dtype == FP8


OPCHECK_SAMPLES = [
    (ops.quantize_fp8.default, (torch.randn(4, 8), torch.tensor(0.1))),
    (ops.quantize_fp8.default, (torch.randn(4, 8, dtype=torch.bfloat16), torch.rand(4, 1) + 0.1)),
    (ops.dequantize_fp8.default, (torch.randn(4, 8).to(FP8), torch.rand(4, 1), torch.bfloat16)),
    (ops.quantize_fp8_per_token.default, (torch.randn(2, 3, 8),)),
    (ops.quantize_fp8_groups.default, (torch.randn(3, 40), 16)),
    (ops.dequantize_fp8_blocks.default, (torch.randn(6, 40).to(FP8), torch.rand(2, 3), [4, 16], torch.float32)),
]


@pytest.mark.parametrize("op,args", OPCHECK_SAMPLES, ids=lambda v: str(v) if not isinstance(v, tuple) else "")
def test_opcheck(op: torch._ops.OpOverload, args: tuple) -> None:
    opcheck_fp8(op, args)


def test_docstring_examples_run() -> None:
    objs = [fp8_ops.quantize_fp8, fp8_ops.dequantize_fp8, fp8_ops.quantize_fp8_per_token,
            fp8_ops.quantize_fp8_groups, fp8_ops.dequantize_fp8_blocks]
    run_examples(objs, fp8_ops)
    from recfx.ops import fp8_testing

    run_examples([], fp8_testing)



def _one_shot(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The quantization formula over the whole tensor at once (what the chunked kernel must reproduce bit for bit)."""
    return fp8_ops.round_to_e4m3(x.double() / scale.double()).to(fp8_ops.FP8_DTYPE)


def test_chunked_quantization_gives_the_same_bits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fp8_ops, "QUANTIZE_CHUNK_ELEMENTS", 7)  # many uneven slices, nested along dims 0 and 1
    torch.manual_seed(0)
    x = torch.randn(5, 6, 9) * torch.logspace(-6, 3, 9)  # subnormal to saturating quotients
    x[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    x[1, 1, :3] = torch.tensor([1.0625, 1.1875, -1.0625]) * 0.01  # exact ties between E4M3 neighbours (scale 0.01)
    for scale in (torch.tensor(0.01), torch.rand(5, 1, 1) + 0.01, torch.rand(6, 1) + 0.01, torch.rand(9) + 0.01):
        got = torch.ops.recfx.quantize_fp8(x, scale)
        assert torch.equal(got.view(torch.uint8), _one_shot(x, scale).view(torch.uint8))
    q, s = torch.ops.recfx.quantize_fp8_per_token(x)
    torch.testing.assert_close(s, fp8_ops.scale_from_amax(x.abs().amax(-1, keepdim=True)), rtol=0, atol=0,
                               equal_nan=True)
    assert torch.equal(q.view(torch.uint8), _one_shot(x, s).view(torch.uint8))


def test_quantizing_costs_little_more_memory_than_its_fp8_result() -> None:
    x = torch.randn(8192, 1024)  # 32 MiB of float32
    scale = torch.tensor(0.01)
    # The FP8 result is x.nbytes / 4; the float64 temporaries stay within a slice (a few MiB). Before slicing, the
    # float64 quotient and its rounding temporaries took ~10 x x.nbytes.
    assert peak_new_bytes(lambda: torch.ops.recfx.quantize_fp8(x, scale)) <= 0.75 * x.nbytes
    assert peak_new_bytes(lambda: torch.ops.recfx.quantize_fp8_per_token(x)) <= 0.75 * x.nbytes


@pytest.mark.parametrize("k, group_size", [(256, 128), (300, 128), (5, 8), (40, 7)])
def test_group_quantization_in_slices_gives_the_same_bits(monkeypatch, k: int, group_size: int) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    x = torch.randn(3, 4, k) * torch.logspace(-4, 2, k)
    x[0, 0, :2] = torch.tensor([float("nan"), float("inf")])
    g = -(-k // group_size)
    padded = torch.nn.functional.pad(x.abs(), (0, g * group_size - k))
    want_s = fp8_ops.scale_from_amax(padded.unflatten(-1, (g, group_size)).amax(dim=-1))
    want_q = _one_shot(x, want_s.repeat_interleave(group_size, dim=-1)[..., :k])  # the formula, all at once
    for chunk in (7, 1 << 18):
        monkeypatch.setattr(fp8_ops, "QUANTIZE_CHUNK_ELEMENTS", chunk)
        q, s = torch.ops.recfx.quantize_fp8_groups(x, group_size)
        torch.testing.assert_close(s, want_s, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8))


def test_reference_quantization_takes_larger_slices_on_a_gpu() -> None:
    """Elementwise slicing never changes the bits (tests above); on CUDA the slices are larger (fewer launches)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        on_gpu = torch.empty(4, device="cuda")
    assert fp8_ops.chunk_elements(on_gpu) == fp8_ops.QUANTIZE_CHUNK_ELEMENTS_CUDA
    cpu = fp8_ops.chunk_elements(torch.empty(4))
    assert cpu == fp8_ops.QUANTIZE_CHUNK_ELEMENTS < fp8_ops.QUANTIZE_CHUNK_ELEMENTS_CUDA
