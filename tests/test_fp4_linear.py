"""fp4_linear CPU kernel against the reference, its gradients, and torch.compile."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import apt_ext  # noqa: F401
from apt_ext.nn import FP4Linear
from cpu_paths import supported_cpu_paths
from fp4_helpers import FLOAT_DTYPES, FORMATS, assert_linear_close
from reference import fp4 as ref


def make(fmt, n, k, rng):
    w = torch.randn(n, k, generator=rng) * 0.05
    q = ref.quantize(w, fmt)
    return q, ref.dequantize(*q, fmt)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 70])           # GEMV path, 4-row path, 64-row chunks
def test_matches_reference_every_path(isa, fmt, m, rng, monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    n, k = 10, 100                          # N % 4 != 0, K < K_padded, nvfp4 K_padded % 32 == 16
    q, wd = make(fmt, n, k, rng)
    x = torch.randn(m, k, generator=rng)
    bias = torch.randn(n, generator=rng)
    y = torch.ops.apt.fp4_linear(x, *q, bias, fmt, ref.BLOCK_SIZES[fmt])
    assert_linear_close(y, ref.linear(x, *q, bias, fmt), x, wd)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("xshape", [(5, 96), (2, 3, 96), (96,), (1, 1, 9, 96)])
def test_dtypes_and_leading_dims(fmt, dtype, xshape, rng):
    q, wd = make(fmt, 33, 96, rng)
    x = torch.randn(xshape, generator=rng).to(dtype)
    bias = torch.randn(33, generator=rng).to(torch.bfloat16)   # bias of another float dtype
    y = torch.ops.apt.fp4_linear(x, *q, bias, fmt, ref.BLOCK_SIZES[fmt])
    assert y.shape == (*xshape[:-1], 33)
    assert_linear_close(y, ref.linear(x, *q, bias, fmt), x, wd)


@pytest.mark.parametrize("n,k", [(1, 1), (1, 64), (64, 1), (5, 17)])
def test_tiny_shapes(n, k, rng):
    for fmt in FORMATS:
        q, wd = make(fmt, n, k, rng)
        for m in (1, 6):
            x = torch.randn(m, k, generator=rng)
            y = torch.ops.apt.fp4_linear(x, *q, None, fmt, ref.BLOCK_SIZES[fmt])
            assert_linear_close(y, ref.linear(x, *q, None, fmt), x, wd)


def test_non_contiguous_x(rng):
    q, wd = make("nf4", 9, 64, rng)
    x = torch.randn(64, 6, generator=rng).t()                 # [6, 64], strided
    assert not x.is_contiguous()
    assert_linear_close(torch.ops.apt.fp4_linear(x, *q, None, "nf4", 64), ref.linear(x, *q, None, "nf4"), x, wd)


def test_empty_batch_gives_empty_output(rng):
    q, _ = make("nvfp4", 8, 32, rng)
    y = torch.ops.apt.fp4_linear(torch.empty(0, 32), *q, None, "nvfp4", 16)
    assert y.shape == (0, 8)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
def test_larger_layer_against_reference(isa, fmt, rng, monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    # K = 1100: more than one K slice of the batched path, nvfp4's last slice ends mid-chunk.
    q, wd = make(fmt, 130, 1100, rng)
    for m in (1, 8, 65):
        x = torch.randn(m, 1100, generator=rng)
        assert_linear_close(torch.ops.apt.fp4_linear(x, *q, None, fmt, ref.BLOCK_SIZES[fmt]),
                            ref.linear(x, *q, None, fmt), x, wd)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
def test_k_without_padding_and_two_row_pieces(isa, fmt, rng, monkeypatch):
    # K = 128: a multiple of every block and k-order chunk, so the scalar path reads x in place;
    # N = 70: a full 64-row work piece and a partial one. Leading dims and a bf16 x are converted
    # on the way in and out.
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    q, wd = make(fmt, 70, 128, rng)
    for xshape in ((2, 1, 128), (5, 128)):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(xshape, generator=rng).to(dtype)
            y = torch.ops.apt.fp4_linear(x, *q, None, fmt, ref.BLOCK_SIZES[fmt])
            assert y.shape == (*xshape[:-1], 70) and y.dtype == dtype
            assert_linear_close(y, ref.linear(x, *q, None, fmt), x, wd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_thread_count_does_not_change_the_result(fmt, rng):
    # 300 rows / 75 groups of 4: several work pieces (5 of 64 rows; 10 of 8 groups each), dealt in one
    # lane per thread (uneven lanes at 3 threads, one piece each at 5, more threads than pieces at
    # 7) and claimed across lanes by whichever thread is free; each output is computed by one
    # thread in a fixed order, so the bits do not depend on who. Before each call another x's
    # output is freed, so a row no thread wrote would hold other values.
    q, wd = make(fmt, 300, 520, rng)
    threads = torch.get_num_threads()
    try:
        for m in (1, 8):
            x = torch.randn(m, 520, generator=rng)
            torch.set_num_threads(1)
            one = torch.ops.apt.fp4_linear(x, *q, None, fmt, ref.BLOCK_SIZES[fmt])
            assert_linear_close(one, ref.linear(x, *q, None, fmt), x, wd)
            for t in (2, 3, 5, 7, 16):
                torch.set_num_threads(t)
                torch.ops.apt.fp4_linear(x + 1, *q, None, fmt, ref.BLOCK_SIZES[fmt])  # freed at once
                assert torch.equal(torch.ops.apt.fp4_linear(x, *q, None, fmt, ref.BLOCK_SIZES[fmt]), one), t
    finally:
        torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore:Input #.* requires gradient and is not a double")
@pytest.mark.parametrize("fmt", FORMATS)
def test_gradcheck_x_and_bias(fmt, rng):
    q, _ = make(fmt, 6, 40, rng)
    q = tuple(t.clone() for t in q)
    x = torch.randn(3, 40, generator=rng, requires_grad=True)
    b = torch.randn(6, generator=rng, requires_grad=True)

    def f(x, b):
        return torch.ops.apt.fp4_linear(x, *q, b, fmt, ref.BLOCK_SIZES[fmt])

    # Linear in x and b: float32 finite differences are accurate to ~1e-3 relative.
    assert torch.autograd.gradcheck(f, (x, b), eps=1e-2, atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_gradient_values(dtype, rng):
    q, wd = make("nvfp4", 12, 48, rng)
    x = torch.randn(2, 5, 48, generator=rng).to(dtype).requires_grad_()
    b = torch.randn(12, generator=rng, dtype=torch.float32, requires_grad=True)
    g = torch.randn(2, 5, 12, generator=rng).to(dtype)
    torch.ops.apt.fp4_linear(x, *q, b, "nvfp4", 16).backward(g)
    assert x.grad.dtype == dtype and b.grad.dtype == torch.float32
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}[dtype]
    torch.testing.assert_close(x.grad.float(), g.float() @ wd.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(b.grad, g.float().sum((0, 1)), rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_model(rng):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 16))
    from apt_ext import quantize_
    quantize_(model, fmt="nvfp4")
    assert isinstance(model[0], FP4Linear)
    x = torch.randn(4, 64, generator=rng)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    torch.testing.assert_close(compiled(x), eager, rtol=1e-5, atol=1e-5)


# ---- bfloat16 x with many rows: torch's bf16 GEMM on weight slabs decoded to bfloat16 ----------
def _bf16_gemm_rows() -> int:
    from apt_ext import _native
    return _native._C.fp4.bf16_gemm_min_rows()


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
def test_bf16_x_many_rows_matches_reference(isa, fmt, rng, monkeypatch):
    """On the AVX-512 path of a CPU with AMX-BF16 / AVX512-BF16 this takes the bf16 GEMM path
    (weights rounded to bfloat16: relative 2^-9 each); elsewhere the float32 paths. Both stay
    within the bf16 bound; 1100 weight rows make two slabs, K = 100 is narrower than Kp."""
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    gemm_rows = _bf16_gemm_rows()
    assert gemm_rows == 0 or isa == "avx512"
    q, wd = make(fmt, 1100, 100, rng)
    for m in (1, 40, 70):
        x = torch.randn(2, m, 100, generator=rng).bfloat16()
        bias = torch.randn(1100, generator=rng)
        y = torch.ops.apt.fp4_linear(x, *q, bias, fmt, ref.BLOCK_SIZES[fmt])
        want = ref.linear(x, *q, bias, fmt)
        assert y.dtype == torch.bfloat16 and y.shape == (2, m, 1100)
        mag = x.double().abs() @ wd[:, :100].double().abs().T
        bound = 2 * 2.0 ** -8 * want.double().abs() + 2.0 ** -8 * mag + 1e-6
        assert bool(((y.double() - want.double()).abs() <= bound).all())


def test_fp4linear_leaves_many_bf16_rows_to_the_gemm_path(rng, monkeypatch):
    monkeypatch.delenv("APT_FP4_CPU_ISA", raising=False)
    gemm_rows = _bf16_gemm_rows()
    if not gemm_rows:
        pytest.skip("no bf16 GEMM path on this CPU")
    layer = FP4Linear.from_linear(nn.Linear(64, 24), fmt="nvfp4")
    with torch.no_grad():
        layer(torch.randn(gemm_rows, 64, generator=rng).bfloat16())
        assert layer._cpu_tiled is None                                 # fp4_linear's bf16 GEMM
        layer(torch.randn(gemm_rows, 64, generator=rng))                # float32 x: the tiled copy
        assert layer._cpu_tiled is not None
