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
    """The custom op that compiled graphs call: its fake kernel, schema and autograd."""
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    op = torch.ops.apt_model.prefix_sum.default
    torch.library.opcheck(op, (x,))
    assert torch.equal(op(x), torch.cumsum(x, dim=1))
    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradcheck(prefix_sum, (x,))


def test_eager_call_does_not_import_dynamo():
    """A custom op's first eager call imports torch._dynamo (seconds): the eager path must not."""
    import subprocess
    import sys
    code = ("import sys, torch\n"
            "from apt_ext.model.prefix_sum import prefix_sum\n"
            "prefix_sum(torch.randn(2, 5, 3))\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.mark.parametrize(("x", "err", "match"), [
    (torch.randn(5), ValueError, "x: expected a tensor of at least 2 dims"),
    (torch.ones(2, 3, dtype=torch.long), TypeError, "x: expected a floating tensor"),
])
def test_rejects_bad_input(x, err, match):
    with pytest.raises(err, match=match):
        prefix_sum(x)


def test_prefix_mean_compiles_in_one_graph():
    """fullgraph=True: the compiled graph calls the custom op (no inductor scan) without a graph
    break; compiled equals eager, padding mask included."""
    x = torch.randn(2, 12, 8)
    valid = torch.rand(2, 12) > 0.3
    state = (torch.randn(2, 8), torch.tensor([3.0, 5.0]))
    graphs: list[str] = []

    def backend(gm, example_inputs):  # records the traced graph, then runs it as aot_eager would
        graphs.append(gm.code)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)

    fn = torch.compile(AutopoieticCorrection.prefix_mean, fullgraph=True, backend=backend)
    for args in ((x, None, None), (x, valid, state)):
        want_m, want_state = AutopoieticCorrection.prefix_mean(*args)
        got_m, got_state = fn(*args)
        torch.testing.assert_close(got_m, want_m)
        torch.testing.assert_close(got_state, want_state)
    assert graphs and all("apt_model.prefix_sum" in g and "cumsum" not in g for g in graphs)
