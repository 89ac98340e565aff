import pytest
import torch

from recfx.frontend import capture
from recfx.passes.utils import op_histogram


@pytest.fixture
def graph_of():
    """Capture a module (eval mode) into the graph module the passes work on."""

    def make(model: torch.nn.Module, *inputs: torch.Tensor, dynamic: bool = True) -> torch.fx.GraphModule:
        return capture(model.eval(), inputs, dynamic_batch=dynamic).graph_module

    return make


@pytest.fixture
def count():
    """Number of call_function nodes of an op (by readable name, e.g. 'aten.linear.default')."""

    def n(gm: torch.fx.GraphModule, name: str) -> int:
        return op_histogram(gm).get(name, 0)

    return n
