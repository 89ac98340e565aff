import torch
from torch import nn

import recfx
from recfx.ops.mode import reference_kernels, use_reference

_SEEN: list[bool] = []


@torch.library.custom_op("recfx_test::probe_mode", mutates_args=())
def _probe(x: torch.Tensor) -> torch.Tensor:
    _SEEN.append(use_reference())
    return x.clone()


@_probe.register_fake
def _probe_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Probe(nn.Module):
    def forward(self, x):
        return torch.ops.recfx_test.probe_mode(x) + 1


def test_reference_mode_nests_and_resets():
    assert not use_reference()
    with reference_kernels():
        assert use_reference()
        with reference_kernels(False):
            assert not use_reference()
        assert use_reference()
    assert not use_reference()


def test_eager_backend_runs_ops_on_their_reference():
    compiled = recfx.compile(Probe().eval(), (torch.randn(2, 3),), backend="eager")
    _SEEN.clear()
    compiled(torch.randn(4, 3))
    assert _SEEN == [True]
    _SEEN.clear()
    Probe()(torch.randn(4, 3))  # outside recfx: kernels allowed
    assert _SEEN == [False]
