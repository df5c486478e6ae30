"""The Triton running sum of apt_ext/triton/prefix_sum.py under the CPU interpreter
(TRITON_INTERPRET=1), against torch.cumsum in float64: forward and reverse, chunk edges,
trailing dims, every float dtype. A normal run re-runs this file in a subprocess with the
interpreter on; tests/gpu/test_model_gpu.py runs the compiled kernel."""
from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  (a test dependency: fail, never skip, without it)

from triton_interpreter import interpreted, outside_interpreter, run_under_interpreter  # noqa: E402


@outside_interpreter
def test_triton_running_sum_under_interpreter():
    run_under_interpreter(__file__)


TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 2e-2),
       torch.float16: (2e-3, 2e-3)}


@interpreted
@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 63, 5), (2, 64, 40), (3, 130), (2, 129, 3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reverse", [False, True])
def test_equals_cumsum(rng, shape, dtype, reverse):
    from apt_ext.triton.prefix_sum import scan

    x = torch.randn(shape, generator=rng, dtype=torch.float64).to(dtype)
    got, total = scan(x, reverse)
    xd = x.double()
    want = torch.cumsum(xd.flip(1), dim=1).flip(1) if reverse else torch.cumsum(xd, dim=1)
    assert got.shape == x.shape and got.dtype == dtype and got.is_contiguous() and total is None
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol * max(1, shape[1]) ** 0.5)


@interpreted
def test_non_contiguous_input_and_bad_input(rng):
    from apt_ext.triton.prefix_sum import scan

    x = torch.randn(40, 3, 6, generator=rng).transpose(0, 1)  # [3, 40, 6], rows read in place
    torch.testing.assert_close(scan(x)[0], torch.cumsum(x, dim=1), rtol=1e-5, atol=1e-5)
    wide = torch.randn(2, 150, 70, generator=rng)
    cols = wide[..., 17:57]  # the model's case: columns of a wider matmul output, read in place
    m, total = scan(cols, mean=True, with_total=True)
    counts = torch.arange(1, 151, dtype=torch.float64).view(1, 150, 1)
    torch.testing.assert_close(m.double(), torch.cumsum(cols.double(), 1) / counts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total.double(), cols.double().sum(1), rtol=1e-5, atol=1e-4)
    assert m.is_contiguous() and total.is_contiguous()
    torch.testing.assert_close(scan(cols, reverse=True)[0], torch.cumsum(cols.flip(1), 1).flip(1), rtol=1e-5,
                               atol=1e-4)
    strided = wide[..., ::2]  # rows not contiguous: copied first
    torch.testing.assert_close(scan(strided)[0], torch.cumsum(strided, dim=1), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="x: expected a floating tensor of at least 2 dims"):
        scan(torch.randn(5))
    with pytest.raises(ValueError, match="x: expected a floating tensor"):
        scan(torch.ones(2, 3, dtype=torch.long))


@interpreted
@pytest.mark.parametrize("block_t, block_d", [(16, 16), (128, 16), (32, 64)])
def test_other_block_sizes(rng, block_t, block_d):
    """Chunks of other sizes (what benchmarks/prefix_sum.py times) give the same sums, both ways;
    block sizes that are not powers of two from 16 are refused."""
    from apt_ext.triton.prefix_sum import scan

    x = torch.randn(2, 150, 40, generator=rng)
    m, total = scan(x, mean=True, with_total=True, block_t=block_t, block_d=block_d)
    counts = torch.arange(1, 151, dtype=torch.float64).view(1, 150, 1)
    torch.testing.assert_close(m.double(), torch.cumsum(x.double(), 1) / counts, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total.double(), x.double().sum(1), rtol=1e-5, atol=1e-4)
    r, _ = scan(x, reverse=True, block_t=block_t, block_d=block_d)
    torch.testing.assert_close(r, torch.cumsum(x.flip(1), 1).flip(1), rtol=1e-5, atol=1e-4)
    for bad in (8, 48, 1.5):
        with pytest.raises(ValueError, match="block_t: expected a power of two of at least 16"):
            scan(x, block_t=bad)
    with pytest.raises(ValueError, match="block_d: expected a power of two of at least 16"):
        scan(x, block_d=24)


@interpreted
@pytest.mark.parametrize("shape", [(2, 70, 5), (1, 1, 3), (3, 129)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_prefix_mean_and_its_gradient(rng, shape, dtype):
    """scan(mean=True): forward the causal mean and the total; reverse with init the mean's
    gradient (each row divided by its count before the reverse sum, plus init)."""
    from apt_ext.triton.prefix_sum import scan

    x = torch.randn(shape, generator=rng, dtype=torch.float64).to(dtype)
    xd = x.double()
    counts = torch.arange(1, shape[1] + 1, dtype=torch.float64).view(1, shape[1], *([1] * (x.dim() - 2)))
    m, total = scan(x, mean=True, with_total=True)
    rtol, atol = TOL[dtype]
    assert m.dtype == dtype and total.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(m.double(), torch.cumsum(xd, dim=1) / counts, rtol=rtol, atol=atol)
    torch.testing.assert_close(total.double(), xd.sum(1), rtol=1e-5, atol=1e-5)
    init = torch.randn(total.shape, generator=rng, dtype=total.dtype)
    g, none = scan(x, reverse=True, mean=True, init=init)
    want = torch.cumsum((xd / counts).flip(1), dim=1).flip(1) + init.double().unsqueeze(1)
    assert none is None and g.dtype == dtype
    torch.testing.assert_close(g.double(), want, rtol=rtol, atol=atol)
    with pytest.raises(ValueError, match="init: expected a tensor of shape"):
        scan(x, init=torch.zeros(7))


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("block_t", "block_d"), [(16, 16), (32, 16), (64, 32)])
def test_matmul_chunks(rng, dtype, block_t, block_d):
    """scan(matmul=True), each chunk's sums as a product with a triangle of ones: the training
    step's forward (mean and total) and backward (the reverse mean from a total, the rows split
    into high and low parts) and a plain reverse sum, over T not a multiple of the chunk, against
    float64; float32 x and chunks above MAX_MATMUL_BLOCK_T rows are refused."""
    from apt_ext.triton.prefix_sum import MAX_MATMUL_BLOCK_T, scan

    t = 70
    # 24 columns of a wider tensor (the model's gate source), read in place
    x = torch.randn(2, t, 40, generator=rng, dtype=torch.float64).to(dtype)[..., 8:32]
    xd = x.double()
    counts = torch.arange(1, t + 1, dtype=torch.float64).view(1, t, 1)
    kw = dict(block_t=block_t, block_d=block_d, matmul=True)
    rtol, atol = TOL[dtype]
    m, total = scan(x, mean=True, with_total=True, **kw)
    assert m.dtype == dtype and total.dtype == torch.float32
    torch.testing.assert_close(m.double(), torch.cumsum(xd, dim=1) / counts, rtol=rtol, atol=atol)
    torch.testing.assert_close(total.double(), xd.sum(1), rtol=1e-5, atol=1e-5)
    init = torch.randn(total.shape, generator=rng)
    g, _ = scan(x, reverse=True, mean=True, init=init, **kw)
    want = torch.cumsum((xd / counts).flip(1), dim=1).flip(1) + init.double().unsqueeze(1)
    torch.testing.assert_close(g.double(), want, rtol=rtol, atol=atol)
    r, _ = scan(x, reverse=True, **kw)
    torch.testing.assert_close(r.double(), torch.cumsum(xd.flip(1), dim=1).flip(1), rtol=rtol, atol=atol * t ** 0.5)
    # the quotients 1/(s+1) are not 16-bit numbers: their high and low parts together keep the
    # reverse mean's first row at float32's accuracy where it cancels to zero against init
    ones = torch.ones(1, t, 16, dtype=dtype)
    harmonic = (1.0 / counts.view(t)).sum().item()
    g0 = scan(ones, reverse=True, mean=True, init=torch.full((1, 16), -harmonic), **kw)[0][:, 0]
    assert g0.abs().max().item() < 1e-4, g0
    with pytest.raises(ValueError, match="matmul: needs bfloat16 or float16 x"):
        scan(x.float(), **kw)
    with pytest.raises(ValueError, match="matmul: needs bfloat16 or float16 x and block_t <="):
        scan(x, block_t=2 * MAX_MATMUL_BLOCK_T, matmul=True)
