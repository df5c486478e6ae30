"""apt_model::prefix_sum (apt_ext/model/prefix_sum.py): the running sum of autopoietic attention's
causal prefix mean, kept opaque to torch.compile. Against torch.cumsum on fresh random inputs,
opcheck, gradcheck, input checks, and a fullgraph compile of the prefix mean."""
from __future__ import annotations

import pytest
import torch

from apt_ext.model.autopoietic import AutopoieticCorrection
from apt_ext.model.prefix_sum import BLOCK_ROWS, blocked_cumsum, prefix_mean, prefix_sum, suffix_sum


@pytest.mark.parametrize("shape", [(3, 17), (2, 33, 8), (1, 5, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_equals_cumsum(shape, dtype):
    x = torch.randn(shape).to(dtype)
    assert torch.equal(prefix_sum(x), torch.cumsum(x, dim=1))


@pytest.mark.parametrize("t", [1, 2 * BLOCK_ROWS, 2 * BLOCK_ROWS + 1, 4 * BLOCK_ROWS, 1000])
@pytest.mark.parametrize("rest", [(), (7,), (3, 2)])
def test_blocked_cumsum_equals_cumsum(t, rest):
    """The CUDA path's blocked scan (any device): the same sums in another order, so float64
    agrees to rounding; the shape, dtype and every row past a block edge and a padded tail."""
    x = torch.randn((2, t) + rest, dtype=torch.float64)
    got = blocked_cumsum(x)
    assert got.shape == x.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, torch.cumsum(x, dim=1), rtol=1e-12, atol=1e-10)
    x32 = torch.randn((2, t) + rest)
    torch.testing.assert_close(blocked_cumsum(x32), torch.cumsum(x32, dim=1), rtol=1e-5, atol=1e-4)


def test_opcheck_and_gradcheck():
    """The custom op that compiled graphs call, forward and reverse: its fake kernel, schema and
    autograd (each direction's backward is the other)."""
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    op = torch.ops.apt_model.prefix_sum.default
    for reverse in (False, True):
        torch.library.opcheck(op, (x, reverse))
        assert torch.autograd.gradcheck(lambda t: op(t, reverse), (x,))
    assert torch.equal(op(x), torch.cumsum(x, dim=1))
    torch.testing.assert_close(op(x, True), torch.cumsum(x.flip(1), dim=1).flip(1), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(prefix_sum, (x,))


@pytest.mark.parametrize("running_sum", [torch.cumsum, blocked_cumsum], ids=["cumsum", "blocked"])
def test_suffix_sum_equals_flipped_cumsum(running_sum):
    """The backward's reverse running sum (total minus the sum before each row) against the
    flip-cumsum-flip definition: float64 to rounding, float32 to its precision, and a bfloat16
    gradient summed in float32 (returned in bfloat16)."""
    scan = (lambda t: running_sum(t, dim=1)) if running_sum is torch.cumsum else running_sum
    for shape in [(2, 1, 3), (2, 70, 5), (3, 300, 2, 2)]:
        g = torch.randn(shape, dtype=torch.float64)
        want = torch.cumsum(g.flip(1), dim=1).flip(1)
        torch.testing.assert_close(suffix_sum(g, scan), want, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(suffix_sum(g.float(), scan), want.float(), rtol=1e-5, atol=1e-4)
        got = suffix_sum(g.bfloat16(), scan)
        assert got.dtype == torch.bfloat16
        ref = torch.cumsum(g.bfloat16().double().flip(1), dim=1).flip(1)
        torch.testing.assert_close(got.double(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_backward_equals_cumsum_backward(dtype):
    """prefix_sum's eager autograd (suffix_sum backward) against torch.cumsum's on fresh inputs."""
    x = torch.randn(3, 77, 6).to(dtype).requires_grad_()
    g = torch.randn(3, 77, 6).to(dtype)
    (got,) = torch.autograd.grad(prefix_sum(x), x, g)
    (want,) = torch.autograd.grad(torch.cumsum(x.float(), dim=1), x, g.float())
    assert got.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(got.float(), want.float(), **tol)


def test_compiled_backward_scans_forward_without_flip():
    """Under torch.compile the backward graph calls the op once more (the reverse scan) and
    flips nothing; its gradient equals eager's."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs: list[str] = []

    def record(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    fn = torch.compile(prefix_sum, fullgraph=True, backend=aot_autograd(fw_compiler=record, bw_compiler=record))
    x = torch.randn(2, 40, 3, requires_grad=True)
    g = torch.randn(2, 40, 3)
    (got,) = torch.autograd.grad(fn(x), x, g)
    torch.testing.assert_close(got, torch.cumsum(g.flip(1), dim=1).flip(1), rtol=1e-5, atol=1e-5)
    assert len(graphs) == 2, graphs
    assert "apt_model.prefix_sum" in graphs[1] and "flip" not in graphs[1], graphs[1]


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
    with pytest.raises(err, match=match.replace("x:", "grad:")):
        suffix_sum(x, torch.cumsum)


def test_prefix_mean_compiles_in_one_graph():
    """fullgraph=True: the compiled graph calls the custom ops (no inductor scan) without a graph
    break; compiled equals eager, padding mask and state included."""
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
    # no mask and no state: the one prefix-mean op; with them: the running-sum op
    assert len(graphs) == 2 and "apt_model.prefix_mean" in graphs[0] and "apt_model.prefix_sum" in graphs[1]
    assert all("cumsum" not in g for g in graphs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_prefix_mean_equals_cumsum_over_counts(dtype):
    """prefix_mean: the causal mean in x's dtype and the float total, against float64 sums."""
    x = torch.randn(3, 37, 5, dtype=torch.float64).to(dtype)
    m, total = prefix_mean(x)
    xd = x.double()
    want = torch.cumsum(xd, dim=1) / torch.arange(1, 38, dtype=torch.float64).view(1, 37, 1)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-2, "atol": 1e-2}
    assert m.dtype == dtype and total.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(m.double(), want, **tol)
    torch.testing.assert_close(total.double(), xd.sum(1), rtol=1e-5, atol=1e-5)


def test_prefix_mean_ops_opcheck_and_gradients():
    """apt_model::prefix_mean and its backward op: fake kernels, schemas, gradients of both
    outputs, and second order (the backward is the forward's adjoint); eager the same."""
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    op, bw = torch.ops.apt_model.prefix_mean.default, torch.ops.apt_model.prefix_mean_backward.default
    torch.library.opcheck(op, (x,))
    torch.library.opcheck(bw, (torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True),
                                torch.randn(2, 4, dtype=torch.float64, requires_grad=True)))
    for fn in (op, prefix_mean):
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))
    (g,) = torch.autograd.grad(op(x)[0].sum(), x)  # total unused: its gradient is taken as zero
    torch.testing.assert_close(g, torch.autograd.grad(prefix_mean(x)[0].sum(), x)[0])
    with pytest.raises(ValueError, match="x: expected a tensor of at least 2 dims"):
        prefix_mean(torch.randn(4))
