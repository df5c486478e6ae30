"""FP4 ops on a CUDA GPU: the CUDA kernels and (in a child process with APT_FORCE_TRITON=1) the
Triton kernels, against tests/reference/fp4.py computed on the CPU, on fresh random inputs.

Run:  python -m pytest tests/gpu/test_fp4_cuda.py -q
Sanitizer subset (small shapes, every kernel):
      compute-sanitizer --tool memcheck python -m pytest tests/gpu/test_fp4_cuda.py -k sanitizer -q
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import apt_ext  # noqa: F401  (registers torch.ops.apt.*)
from apt_ext import _native
from apt_ext.fp4 import _ops as fp4_ops
from apt_ext.nn import FP4Linear
from fp4_helpers import assert_cuda_graph_replay_matches_eager
from reference import fp4 as ref

FORMATS = ("nvfp4", "mxfp4", "nf4")
X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
# N odd; K = 200 is no multiple of 64 (nvfp4 rows are then 104 bytes: not 16-byte aligned).
N_ODD, K_ODD = 257, 200

needs_cuda_build = pytest.mark.skipif(
    not _native.build_info().get("cuda"), reason="apt_ext was built without its CUDA kernels (no nvcc)")
DEV = "cuda"


def _gen() -> torch.Generator:
    """A fresh generator drawn from the test's seeded global RNG (conftest: APT_TEST_SEED replays)."""
    g = torch.Generator()
    g.manual_seed(int(torch.randint(2**62, ())))
    return g


def _weight(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Random weight with per-row magnitudes, an all-zero row, exact E2M1 tie points and a huge value."""
    w = torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 2
    w[0] = 0.0
    if n > 2 and k >= 8:
        w[1, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -6.0])
        w[2, 3] = 1e4
    return w


def _rel_err(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.double().cpu() - r.double().cpu()).norm() / r.double().cpu().norm().clamp_min(1e-30))


def _quantized(fmt: str, n: int, k: int, g: torch.Generator):
    packed, scales, ts = ref.quantize(_weight(n, k, g), fmt)
    return packed.to(DEV), scales.to(DEV), ts.to(DEV), ref.BLOCK_SIZES[fmt]


def _check_linear(fmt: str, m: int, dt: torch.dtype, with_bias: bool, n: int = N_ODD, k: int = K_ODD) -> None:
    g = _gen()
    packed, scales, ts, bs = _quantized(fmt, n, k, g)
    x = torch.randn(m, k, generator=g).to(dt).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV) if with_bias else None
    y = torch.ops.apt.fp4_linear(x, packed, scales, ts, bias, fmt, bs)
    torch.cuda.synchronize()
    want = ref.linear(x.cpu(), packed.cpu(), scales.cpu(), ts.cpu(), None if bias is None else bias.cpu(), fmt, bs)
    assert y.dtype == dt and y.shape == (m, n) and y.device.type == "cuda"
    assert bool(torch.isfinite(y).all())
    err = _rel_err(y, want)
    assert err < RTOL[dt], f"relative error {err:.3g} (fmt={fmt}, M={m}, dtype={dt})"


# ---- quantize / pack / dequantize: bit-exact ---------------------------------------------
@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", X_DTYPES)
@pytest.mark.parametrize("shape", [(N_ODD, K_ODD), (1, 1), (64, 1000)])
def test_quantize_bit_exact(fmt, dt, shape):
    w = _weight(*shape, _gen()).to(dt)
    packed, scales, ts = torch.ops.apt.fp4_quantize(w.to(DEV), fmt, ref.BLOCK_SIZES[fmt])
    want = ref.quantize(w, fmt)
    assert torch.equal(packed.cpu(), want[0])
    assert scales.dtype == want[1].dtype
    assert torch.equal(scales.cpu().view(torch.uint8), want[1].view(torch.uint8))
    assert torch.equal(ts.cpu().reshape(()), want[2].reshape(()))


@needs_cuda_build
def test_quantize_rejects_bad_input():
    with pytest.raises(ValueError, match="w"):
        torch.ops.apt.fp4_quantize(torch.tensor([[1.0, float("nan")]], device=DEV), "nvfp4", 16)
    with pytest.raises(ValueError, match="fmt"):
        torch.ops.apt.fp4_quantize(torch.randn(4, 4, device=DEV), "fp5", 16)
    with pytest.raises(ValueError, match="block_size"):
        torch.ops.apt.fp4_quantize(torch.randn(4, 4, device=DEV), "mxfp4", 16)
    with pytest.raises(TypeError, match="w"):
        torch.ops.apt.fp4_quantize(torch.ones(4, 4, device=DEV, dtype=torch.int32), "nvfp4", 16)


@needs_cuda_build
def test_pack_unpack():
    g = _gen()
    codes = torch.randint(0, 16, (33, 70), generator=g, dtype=torch.uint8)
    packed = torch.ops.apt.fp4_pack(codes.to(DEV))
    assert torch.equal(packed.cpu(), ref.pack(codes))
    assert torch.equal(torch.ops.apt.fp4_unpack(packed).cpu(), codes)
    bad = codes.clone()
    bad[3, 5] = 16
    with pytest.raises(ValueError, match="codes"):
        torch.ops.apt.fp4_pack(bad.to(DEV))


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", X_DTYPES)
def test_dequantize_bit_exact(fmt, dt):
    packed, scales, ts, bs = _quantized(fmt, N_ODD, K_ODD, _gen())
    got = torch.ops.apt.fp4_dequantize(packed, scales, ts, fmt, bs, dt)
    want = ref.dequantize(packed.cpu(), scales.cpu(), ts.cpu(), fmt, bs, dt)
    assert got.dtype == dt and torch.equal(got.cpu(), want)


# ---- fp4_linear ---------------------------------------------------------------------------
@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 3, 16, 17, 128, 1000])
@pytest.mark.parametrize("dt", X_DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear(fmt, m, dt, with_bias):
    _check_linear(fmt, m, dt, with_bias)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 12, 24, 64])
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_linear_long_k(fmt, m, dt):
    """Several K steps, K split over the grid, 16-byte aligned rows (K = 4096 + 96); float32 x
    at M <= 16 takes the split-bf16 tensor-core path."""
    _check_linear(fmt, m, dt, True, n=300, k=4192)


@needs_cuda_build
def test_linear_3d_and_strided_input():
    g = _gen()
    packed, scales, ts, bs = _quantized("nvfp4", 96, 128, g)
    x = torch.randn(2, 9, 256, generator=g, dtype=torch.bfloat16).to(DEV)[..., ::2]  # non-contiguous
    y = torch.ops.apt.fp4_linear(x, packed, scales, ts, None, "nvfp4", bs)
    want = ref.linear(x.cpu(), packed.cpu(), scales.cpu(), ts.cpu(), None, "nvfp4", bs)
    assert y.shape == (2, 9, 96) and _rel_err(y, want) < RTOL[torch.bfloat16]


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [2, 200])
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_linear_gelu(fmt, m, dt):
    g = _gen()
    packed, scales, ts, bs = _quantized(fmt, N_ODD, K_ODD, g)
    x = torch.randn(m, K_ODD, generator=g).to(dt).to(DEV)
    bias = torch.randn(N_ODD, generator=g).to(DEV)
    y = fp4_ops.fp4_linear_gelu(x, packed, scales, ts, bias, fmt)
    h = ref.linear(x.cpu().double(), packed.cpu(), scales.cpu(), ts.cpu(), bias.cpu(), fmt, bs)
    want = torch.nn.functional.gelu(h).to(dt)
    assert y.dtype == dt and _rel_err(y, want) < RTOL[dt]


@needs_cuda_build
def test_linear_rejects_bad_input():
    packed, scales, ts, bs = _quantized("nvfp4", 8, 64, _gen())
    with pytest.raises(ValueError, match="x"):
        torch.ops.apt.fp4_linear(torch.randn(2, 80, device=DEV), packed, scales, ts, None, "nvfp4", bs)
    with pytest.raises(ValueError, match="x"):
        torch.ops.apt.fp4_linear(torch.randn(2, 64), packed, scales, ts, None, "nvfp4", bs)
    with pytest.raises(ValueError, match="bias"):
        torch.ops.apt.fp4_linear(torch.randn(2, 64, device=DEV), packed, scales, ts,
                                 torch.randn(7, device=DEV), "nvfp4", bs)
    with pytest.raises(TypeError, match="scales"):
        torch.ops.apt.fp4_linear(torch.randn(2, 64, device=DEV), packed, scales.float(), ts, None, "nvfp4", bs)


@needs_cuda_build
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_linear_grad_x(dt):
    g = _gen()
    packed, scales, ts, bs = _quantized("nf4", 40, 96, g)
    x = torch.randn(5, 96, generator=g).to(dt).to(DEV).requires_grad_()
    bias = torch.randn(40, generator=g, device="cpu").to(DEV).requires_grad_()
    y = torch.ops.apt.fp4_linear(x, packed, scales, ts, bias, "nf4", bs)
    gy = torch.randn_like(y)
    y.backward(gy)
    w = ref.dequantize(packed.cpu(), scales.cpu(), ts.cpu(), "nf4", bs, torch.float64)[:, :96]  # logical K
    assert x.grad.shape == x.shape
    assert _rel_err(x.grad, gy.cpu().double() @ w) < RTOL[dt]
    assert _rel_err(bias.grad, gy.cpu().double().sum(0)) < 1e-5


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck_cuda(fmt):
    g = _gen()
    packed, scales, ts, bs = _quantized(fmt, 24, 64, g)
    x = torch.randn(3, 64, generator=g).to(DEV, torch.bfloat16).requires_grad_()
    bias = torch.randn(24, generator=g).to(DEV)
    codes = torch.randint(0, 16, (5, 8), generator=g, dtype=torch.uint8).to(DEV)
    cases = [
        (torch.ops.apt.fp4_pack.default, (codes,)),
        (torch.ops.apt.fp4_unpack.default, (packed,)),
        (torch.ops.apt.fp4_quantize.default, (torch.randn(8, 40, generator=g).to(DEV), fmt, bs)),
        (torch.ops.apt.fp4_dequantize.default, (packed, scales, ts, fmt, bs, torch.bfloat16)),
        (torch.ops.apt.fp4_linear.default, (x, packed, scales, ts, bias, fmt, bs)),
        (torch.ops.apt.fp4_linear_gelu.default, (x, packed, scales, ts, bias, fmt, bs)),
    ]
    # test_schema does arithmetic on the inputs, which float8 (nvfp4's scales) may lack.
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in cases:
        has_fp8 = any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args)
        torch.library.opcheck(op, args, test_utils=utils if has_fp8 else ("test_schema", *utils))


# ---- a model: CUDA graphs, torch.compile ---------------------------------------------------
def _model(dt: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 128))
    return apt_ext.quantize_(model.to(DEV, dt), fmt="nvfp4")  # quantised on the GPU


@needs_cuda_build
def test_cuda_graph_capture():
    """M = 4: FP4Linear's tiled GEMV (its copy built during the warm-up)."""
    assert_cuda_graph_replay_matches_eager(_model(torch.bfloat16),
                                           torch.randn(4, 256, device=DEV, dtype=torch.bfloat16))


@needs_cuda_build
def test_torch_compile_fullgraph():
    model = _model(torch.bfloat16)
    x = torch.randn(3, 256, device=DEV, dtype=torch.bfloat16)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert _rel_err(compiled(x), model(x)) < 1e-2


# ---- compute-sanitizer subset ------------------------------------------------------------
@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_sanitizer_kernels(fmt):
    """Every CUDA kernel once on small odd shapes: both fp4_linear paths (M <= 128 and above),
    the split-K reduce (K = 4192), both GELU variants; each result checked against the reference."""
    g = _gen()
    bs = ref.BLOCK_SIZES[fmt]
    w = _weight(19, 72, g)
    packed, scales, ts = torch.ops.apt.fp4_quantize(w.to(DEV), fmt, bs)
    for got, want in zip((packed, scales, ts), ref.quantize(w, fmt)):
        assert torch.equal(got.cpu().view(torch.uint8) if got.dtype == torch.float8_e4m3fn else got.cpu(),
                           want.view(torch.uint8) if want.dtype == torch.float8_e4m3fn else want)
    codes = torch.ops.apt.fp4_unpack(packed)
    assert torch.equal(torch.ops.apt.fp4_pack(codes), packed)
    w_hat = torch.ops.apt.fp4_dequantize(packed, scales, ts, fmt, bs, torch.bfloat16)
    assert torch.equal(w_hat.cpu(), ref.dequantize(packed.cpu(), scales.cpu(), ts.cpu(), fmt, bs, torch.bfloat16))
    p_cpu, s_cpu, t_cpu = packed.cpu(), scales.cpu(), ts.cpu()
    for m in (1, 9, 33, 200):
        x = torch.randn(m, 72, generator=g).to(DEV, torch.bfloat16)
        bias = torch.randn(19, generator=g)
        y = torch.ops.apt.fp4_linear(x, packed, scales, ts, None, fmt, bs)
        assert _rel_err(y, ref.linear(x.cpu(), p_cpu, s_cpu, t_cpu, None, fmt, bs)) < RTOL[torch.bfloat16]
        y = torch.ops.apt.fp4_linear_gelu(x, packed, scales, ts, bias.to(DEV), fmt, bs)
        want = torch.nn.functional.gelu(ref.linear(x.cpu().double(), p_cpu, s_cpu, t_cpu, bias, fmt, bs))
        assert _rel_err(y, want) < RTOL[torch.bfloat16]
    long_w = _weight(40, 4192, g)
    long_q = torch.ops.apt.fp4_quantize(long_w.to(DEV), fmt, bs)
    long_cpu = [t.cpu() for t in long_q]
    for dt in (torch.float16, torch.float32):
        x = torch.randn(3, 4192, generator=g).to(DEV, dt)
        bias = torch.randn(40, generator=g)
        y = torch.ops.apt.fp4_linear_gelu(x, *long_q, bias.to(DEV), fmt, bs)
        want = torch.nn.functional.gelu(ref.linear(x.cpu().double(), *long_cpu, bias, fmt, bs))
        assert _rel_err(y, want) < RTOL[dt], f"split-K GELU, x {dt}"
    torch.cuda.synchronize()


@needs_cuda_build
def test_sanitizer_linear_values():
    for fmt in FORMATS:
        for m in (1, 17):
            _check_linear(fmt, m, torch.float16, True, n=19, k=72)


# ---- the Triton path on CUDA (APT_FORCE_TRITON=1, child process) --------------------------
# M <= 2 runs the split-K GEMV (apt_ext/triton/fp4_gemv.py; APT_TRITON_GEMV_MAX_M up to 16), up to 64 rows the tiled GEMM
# (fp4_gemm.py), from 512 (apt_ext/triton/fp4_linear.py's DEQUANT_MATMUL_MIN_M) dequantised
# slabs times torch.mm, in between the faster of the two (timed; untimed, as in the matrix
# below: the GEMM below 256 rows). The matrix runs each family's first config (APT_TRITON_AUTOTUNE=0: no
# tuning time); every config of both families is checked on nvfp4 and nf4 with bfloat16 x, and
# the autotuner itself once per family.
TRITON_M = (1, 2, 3, 16, 17, 64, 128, 255, 256, 4096)
TRITON_CONFIG_FORMATS = ("nvfp4", "nf4")
TRITON_CONFIG_K = 1000  # not a multiple of 128; several steps and splits per config


def _triton_configs_case(fmt: str) -> None:
    """Every GEMV config at M = 1 and every GEMM config at M = 3, 64 and 128 (K = 1000, bf16 x); more rows
    of x in the GEMV (unrolled per row: slow to compile) are covered by the matrix's first config."""
    from apt_ext.triton import fp4_gemm, fp4_gemv
    from apt_ext.triton.fp4_decode import scales_as_raw

    g = _gen()
    packed, scales, ts, bs = _quantized(fmt, N_ODD, TRITON_CONFIG_K, g)
    bias = torch.randn(N_ODD, generator=g).to(DEV)
    args = (packed, scales_as_raw(scales, fmt), ts.reshape(()), bias, fmt, bs, False)
    cpu = (packed.cpu(), scales.cpu(), ts.cpu(), bias.cpu(), fmt, bs)
    runs = [(1, fp4_gemv.gemv, cfg) for cfg in fp4_gemv.configs(N_ODD, packed.shape[1] * 2, packed.device)]
    runs += [(m, fp4_gemm.gemm, cfg) for m in (3, 64, 128)  # small-M tiles (K split), then the large ones
             for cfg in fp4_gemm.configs(1 << (m - 1).bit_length(), N_ODD, packed.shape[1] * 2, packed.device, fmt)]
    failures = []  # every failing config, named
    for m, fn, cfg in runs:
        x = torch.randn(m, TRITON_CONFIG_K, generator=g).to(torch.bfloat16).to(DEV)
        try:
            y = fn(x, *args, config=cfg)
        except Exception as exc:  # e.g. OutOfResources: the config list must fit this GPU
            failures.append(f"{fn.__name__} M={m} {cfg}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        err = _rel_err(y, ref.linear(x.cpu(), *cpu))
        if not err < RTOL[torch.bfloat16]:
            failures.append(f"{fn.__name__} M={m} {cfg}: relative error {err:.3g}")
    assert not failures, "\n".join(failures)


def _triton_autotune_case() -> None:
    """With tuning on (the child's APT_TRITON_AUTOTUNE=0 lifted), both families pick and cache a
    config, and at 128 rows the path (GEMM or dequantise + torch.mm) is timed and cached too."""
    from apt_ext.triton import autotune

    del os.environ["APT_TRITON_AUTOTUNE"]
    try:
        before = set(autotune.tuned())
        for m in (1, 64, 128):
            _check_linear("nvfp4", m, torch.bfloat16, True, n=N_ODD + 2, k=TRITON_CONFIG_K)
        new = [key[0] for key in set(autotune.tuned()) - before]
        assert sorted(new) == ["fp4_gemm", "fp4_gemm", "fp4_gemv", "fp4_linear_path"], new
    finally:
        os.environ["APT_TRITON_AUTOTUNE"] = "0"


def _triton_direct_launch_case() -> None:
    """apt_ext.triton.launch: after the JIT's first launch of a specialisation, launches skip the
    JIT and give its bits; an x 2 bytes off a 16-byte boundary compiles and binds its own kernel;
    a CUDA graph captures direct launches (M = 1: the GEMV, M = 16: the GEMM; nvfp4, bf16 x)."""
    from apt_ext.triton import fp4_gemm, fp4_gemv, launch

    g = _gen()
    packed, scales, ts, bs = _quantized("nvfp4", N_ODD, K_ODD, g)
    buf = torch.randn(16 * K_ODD + 8, generator=g).to(torch.bfloat16).to(DEV)

    def op(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.apt.fp4_linear(x, packed, scales, ts, None, "nvfp4", bs)

    for m, launcher in ((1, fp4_gemv._GEMV), (16, fp4_gemm._GEMM)):
        launcher._bound.clear()  # the matrix's cases bound some of these specialisations already
        jit_launches = []
        jit_run = launcher.fn.run
        launcher.fn.run = lambda *a, **kw: (jit_launches.append(kw["grid"]), jit_run(*a, **kw))[1]
        try:
            for offset in (0, 1):  # the second x starts 2 bytes past the first
                x = buf[offset:offset + m * K_ODD].view(m, K_ODD)
                launch.set_direct_launch(False)
                want = op(x)
                launch.set_direct_launch(True)
                before = len(jit_launches)
                first, again = op(x), op(x)
                assert len(jit_launches) == before + 1, f"M={m}, offset {offset}: {len(jit_launches) - before} JIT launches"
                assert torch.equal(first, want) and torch.equal(again, want), f"M={m}, offset {offset}"
            err = _rel_err(again, ref.linear(x.cpu(), packed.cpu(), scales.cpu(), ts.cpu(), None, "nvfp4", bs))
            assert err < RTOL[torch.bfloat16], f"M={m}: relative error {err:.3g}"
            static_x = buf[:m * K_ODD].view(m, K_ODD).clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = op(static_x)
            static_x.copy_(torch.randn(m, K_ODD, generator=g).to(torch.bfloat16))
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static_y, op(static_x)), f"M={m}: graph replay differs from an eager call"
        finally:
            launch.set_direct_launch(True)
            del launcher.fn.run


def _triton_split_streams_case() -> None:
    """The split launches' arrival counters (one buffer per stream, set back to zero by each
    tile's last split; the graph's from the device's capture pool): a split GEMV and a split GEMM
    launched over and over on two streams at once, and a CUDA graph of both replayed on a third,
    give the bits of the same launches one at a time, and leave every counter at zero."""
    from apt_ext.triton import arrival_counters, fp4_gemm, fp4_gemv
    from apt_ext.triton.fp4_decode import scales_as_raw

    g = _gen()
    n, k = 4096, 4096  # launches long enough to overlap
    packed, scales, ts, bs = _quantized("nvfp4", n, k, g)
    args = (packed, scales_as_raw(scales, "nvfp4"), ts.reshape(()), None, "nvfp4", bs, False)
    gemv_cfg = max(fp4_gemv.configs(n, k, packed.device), key=lambda c: c.kwargs["SPLIT_K"])
    gemm_cfg = max(fp4_gemm.configs(16, n, k, packed.device), key=lambda c: c.kwargs["SPLIT_K"])
    assert gemv_cfg.kwargs["SPLIT_K"] > 1 and gemm_cfg.kwargs["SPLIT_K"] > 1
    xs = [torch.randn(m, k, generator=g).to(torch.bfloat16).to(DEV) for m in (1, 16) for _ in range(8)]

    def launch(x: torch.Tensor) -> torch.Tensor:
        return (fp4_gemv.gemv(x, *args, config=gemv_cfg) if x.shape[0] == 1
                else fp4_gemm.gemm(x, *args, config=gemm_cfg))

    want = [launch(x) for x in xs]  # one at a time, on the current stream
    static = [x.clone() for x in xs[::5]]
    pool = arrival_counters._POOL[torch.device(DEV, torch.cuda.current_device())]
    taken = pool[1]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = [launch(x) for x in static]
    assert pool[1] > taken, "the captured launches' counters come from the capture pool"
    streams = [torch.cuda.Stream() for _ in range(3)]
    torch.cuda.synchronize()
    orders = (list(range(len(xs))), list(range(len(xs)))[::-1])  # the two streams' orders of x
    got: list[list[tuple[int, torch.Tensor]]] = [[], []]
    for _ in range(20):
        for i, stream in enumerate(streams[:2]):
            with torch.cuda.stream(stream):
                got[i] += [(j, launch(xs[j])) for j in orders[i]]
        with torch.cuda.stream(streams[2]):
            graph.replay()
    torch.cuda.synchronize()
    for i, pairs in enumerate(got):
        bad = [j for j, y in pairs if not torch.equal(y, want[j])]
        assert not bad, f"stream {i}: {len(bad)} of {len(pairs)} launches differ from the serial ones"
    assert all(torch.equal(y, want[5 * j]) for j, y in enumerate(static_y)), "graph replay differs"
    left = {key: int(c.count_nonzero()) for key, c in arrival_counters._STREAM.items() if key[0].type == "cuda"}
    assert len(left) >= 3 and not any(left.values()), f"counters not zero, per (device, stream): {left}"
    assert not bool(pool[0][:pool[1]].any()), "the graph's counters not zero after its replays"


def _triton_child() -> dict[str, str | None]:
    assert os.environ.get("APT_FORCE_TRITON") == "1"
    from apt_ext import triton as apt_triton
    from apt_ext.triton import fp4_linear as tlin

    results: dict[str, str | None] = {}
    # the cases the parent's run selected (-k), or every case
    selected = set(filter(None, os.environ.get("APT_TRITON_CASES", "").split(","))) or None

    def run(name, fn) -> None:
        if selected is not None and name not in selected:
            return
        try:
            fn()
            results[name] = None
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"

    assert "fp4_linear" in apt_triton.KERNELS
    for fmt in FORMATS:
        for dt in X_DTYPES:
            for m in TRITON_M:
                run(f"{fmt}-{str(dt)[6:]}-m{m}", lambda fmt=fmt, m=m, dt=dt: _check_linear(fmt, m, dt, m % 2 == 1))

        def dequantize_dispatch(fmt=fmt) -> None:
            packed, scales, ts, bs = _quantized(fmt, N_ODD, K_ODD, _gen())
            got = torch.ops.apt.fp4_dequantize(packed, scales, ts, fmt, bs, torch.bfloat16)
            want = ref.dequantize(packed.cpu(), scales.cpu(), ts.cpu(), fmt, bs, torch.bfloat16)
            assert torch.equal(got.cpu(), want), "dequantize differs"
            x = torch.randn(5, K_ODD, device=DEV, dtype=torch.bfloat16)
            direct = tlin.fp4_linear(x, packed, scales, ts, None, fmt, bs)
            assert torch.equal(torch.ops.apt.fp4_linear(x, packed, scales, ts, None, fmt, bs), direct), \
                "the op did not dispatch to the Triton kernel"

        run(f"{fmt}-dequantize-dispatch", dequantize_dispatch)
    for fmt in TRITON_CONFIG_FORMATS:
        run(f"{fmt}-every-config", lambda fmt=fmt: _triton_configs_case(fmt))
    run("autotune", _triton_autotune_case)
    run("direct-launch", _triton_direct_launch_case)
    run("split-streams", _triton_split_streams_case)
    return results


def selected_triton_cases(items) -> list[str]:
    """The ``case`` of every test_triton_on_cuda among the session's selected items."""
    return [item.callspec.params["case"] for item in items
            if getattr(item, "originalname", None) == "test_triton_on_cuda" and hasattr(item, "callspec")]


TRITON_CASES = ([f"{f}-{str(d)[6:]}-m{m}" for f in FORMATS for d in X_DTYPES for m in TRITON_M]
                + [f"{f}-dequantize-dispatch" for f in FORMATS]
                + [f"{f}-every-config" for f in TRITON_CONFIG_FORMATS] + ["autotune", "direct-launch", "split-streams"])


def triton_group(case: str) -> str:
    """The child process that runs ``case``: one per format's linear and dispatch cases, one per
    format's every-config case (the longest cases: one child for all of them took 258 s of a
    271 s whole run), one for the rest (autotune, direct launch, split streams)."""
    fmt = case.split("-")[0]
    if fmt not in FORMATS:
        return "misc"
    return f"{fmt}_configs" if case.endswith("-every-config") else fmt


_TRITON_RESULTS: dict[str, dict] = {}  # group -> its child's results, once per (xdist worker) process


@pytest.fixture
def triton_results(request, case) -> dict:
    """The results of the Triton child that runs ``case``'s group: the group's selected cases
    in a process with APT_FORCE_TRITON=1. Each group is marked as an xdist group, so that with
    ``--dist loadgroup`` (benchmarks/gpu_session.sh's test stage) each group's child runs once, in
    one worker, beside the other groups' (each worker's session lists every case: before the
    groups, each worker that got any case ran the whole set, three at once, 218 to 293 s of a
    306 s run in the forty-eighth session)."""
    pytest.importorskip("triton")
    group = triton_group(case)
    if group not in _TRITON_RESULTS:
        # the child imports this file's helpers (tests/fp4_helpers.py, tests/reference) as
        # pytest's rootdir conftest makes them importable here
        tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cases = [c for c in selected_triton_cases(request.session.items) if triton_group(c) == group]
        env = dict(os.environ, APT_FORCE_TRITON="1", APT_TRITON_AUTOTUNE="0", APT_TRITON_CASES=",".join(cases),
                   PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, __file__, "triton"], env=env, capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, f"Triton run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        _TRITON_RESULTS[group] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _TRITON_RESULTS[group]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.xdist_group(f"triton_{triton_group(c)}"))
                                  for c in TRITON_CASES])
def test_triton_on_cuda(triton_results, case):
    assert case in triton_results, f"case {case} did not run"
    assert triton_results[case] is None, triton_results[case]


if __name__ == "__main__" and sys.argv[1:] == ["triton"]:
    print(json.dumps(_triton_child()))
