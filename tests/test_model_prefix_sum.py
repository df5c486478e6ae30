"""apt_model::prefix_sum (apt_ext/model/prefix_sum.py): the running sum of autopoietic attention's
causal prefix mean, kept opaque to torch.compile. Against torch.cumsum on fresh random inputs,
opcheck, gradcheck, input checks, and a fullgraph compile of the prefix mean."""
from __future__ import annotations

import pytest
import torch

from apt_ext.model.autopoietic import AutopoieticCorrection
from apt_ext.model.prefix_sum import prefix_sum


@pytest.mark.parametrize("shape", [(3, 17), (2, 33, 8), (1, 5, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_equals_cumsum(shape, dtype):
    x = torch.randn(shape).to(dtype)
    assert torch.equal(prefix_sum(x), torch.cumsum(x, dim=1))


def test_opcheck_and_gradcheck():
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.apt_model.prefix_sum.default, (x,))
    assert torch.autograd.gradcheck(prefix_sum, (x,))


@pytest.mark.parametrize(("x", "err", "match"), [
    (torch.randn(5), ValueError, "x: expected a tensor of at least 2 dims"),
    (torch.ones(2, 3, dtype=torch.long), TypeError, "x: expected a floating tensor"),
])
def test_rejects_bad_input(x, err, match):
    with pytest.raises(err, match=match):
        prefix_sum(x)


def test_prefix_mean_compiles_in_one_graph():
    """fullgraph=True: the op is not a graph break; compiled equals eager, padding mask included."""
    x = torch.randn(2, 12, 8)
    valid = torch.rand(2, 12) > 0.3
    state = (torch.randn(2, 8), torch.tensor([3.0, 5.0]))
    fn = torch.compile(AutopoieticCorrection.prefix_mean, fullgraph=True, backend="aot_eager")
    for args in ((x, None, None), (x, valid, state)):
        want_m, want_state = AutopoieticCorrection.prefix_mean(*args)
        got_m, got_state = fn(*args)
        torch.testing.assert_close(got_m, want_m)
        torch.testing.assert_close(got_state, want_state)
