"""The tiled-layout CUDA GEMV (csrc/fp4/fp4_gemv_kernel_cuda.h, torch.ops.apt.fp4_linear_tiled)
against apt_ext/reference/fp4.py on the CPU, on fresh random inputs: every format, x dtype, M from 1 to
33, odd N, K not a multiple of 64, with and without bias; the layout on the GPU; FP4Linear's
choice of path; a CUDA-graph capture; opcheck.

Run:  python -m pytest tests/gpu/test_fp4_gemv_cuda.py -q
"""
from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch

import apt_ext  # noqa: F401
from apt_ext import _native
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import tile
from apt_ext.nn import FP4Linear
from apt_ext.nn.fp4_linear import wgmma_gemm_runs
from fp4_helpers import assert_cuda_graph_replay_matches_eager
from reference import fp4 as ref

FORMATS = ("nvfp4", "mxfp4", "nf4")
X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
DEV = "cuda"
needs_cuda_build = pytest.mark.skipif(
    not _native.build_info().get("cuda"), reason="apt_ext was built without its CUDA kernels (no nvcc)")


def _tol(fmt: str, dt: torch.dtype) -> float:
    """nvfp4/mxfp4 weights are exact in bfloat16 and float16/float32 x enter as exact bfloat16
    terms, so only the output rounding (and fp32 summation) remains; an nf4 weight is the
    bfloat16 product of the bfloat16 NF4 value and the bfloat16 absmax (three roundings of 2^-9
    relative at most, 5.9e-3; the absmax's rounding is shared by a whole block, so on few
    columns the output errors do not average out: over 60 seeds at N = 257, K = 200, M = 1 the
    H200 measured a median of 2.6e-3 and a maximum of 4.8e-3 with float16 / float32 x)."""
    if dt == torch.bfloat16:
        return 1e-2
    return 6e-3 if fmt == "nf4" else (2e-3 if dt == torch.float16 else 1e-5)


def _weight(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    w = torch.randn(n, k, generator=g) * torch.logspace(-5, 1, n).unsqueeze(1)
    w[0] = 0.0
    w[1, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -6.0])
    return w


def _rel_err(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.double().cpu() - r.double().cpu()).norm() / r.double().cpu().norm().clamp_min(1e-30))


def _step_major(t: torch.Tensor) -> torch.Tensor:
    """The same [tiles, steps, ...] view of a copy stored step by step."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


@functools.lru_cache(maxsize=128)
def _case(fmt: str, m: int, dt: torch.dtype, with_bias: bool, n: int, k: int, apt_seed: int):
    """(quantised weight, x, bias, reference output) of one check, kept: the launch-variant and
    GEMM-configuration tests repeat the same cases under each setting, and the CPU reference of
    the larger ones costs more than the GPU call."""
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(_weight(n, k, g).to(DEV), fmt)
    x = torch.randn(m, k, generator=g).to(dt).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV) if with_bias else None
    want = ref.linear(x.cpu(), q.packed.cpu(), q.scales.cpu(), q.tensor_scale.cpu(),
                      None if bias is None else bias.cpu(), fmt, q.block_size)
    return q, x, bias, want


def _check(fmt: str, m: int, dt: torch.dtype, with_bias: bool, n: int, k: int, apt_seed: int,
           step_major: bool = False) -> None:
    q, x, bias, want = _case(fmt, m, dt, with_bias, n, k, apt_seed)
    t = tile(q)
    if step_major:
        t = dataclasses.replace(t, tiles=_step_major(t.tiles), tile_scales=_step_major(t.tile_scales))
        assert not t.tiles.is_contiguous()
    y = t.linear(x, bias)
    torch.cuda.synchronize()
    assert y.dtype == dt and y.shape == (m, n) and bool(torch.isfinite(y).all())
    err = _rel_err(y, want)
    assert err < _tol(fmt, dt), f"relative error {err:.3g} (fmt={fmt}, M={m}, dtype={dt}, N={n}, K={k})"


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 8, 15, 16, 17, 33, 64])
@pytest.mark.parametrize("dt", X_DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemv_small_k(fmt, m, dt, with_bias, apt_seed):
    _check(fmt, m, dt, with_bias, n=257, k=200, apt_seed=apt_seed)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 5, 16, 40])
@pytest.mark.parametrize("dt", X_DTYPES)
def test_gemv_long_k(fmt, m, dt, apt_seed):
    """Many steps, K split across warps (shared-memory reduction), K not a multiple of 128."""
    _check(fmt, m, dt, True, n=300, k=4192, apt_seed=apt_seed)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 16])
def test_gemv_step_major_views(fmt, m, apt_seed):
    """Tiles and scales stored step by step (a strided view) are read in their own order."""
    _check(fmt, m, torch.bfloat16, True, n=300, k=4192, apt_seed=apt_seed, step_major=True)


@needs_cuda_build
@pytest.mark.parametrize("launch", ["2,4,4,1", "8,1,4,2", "4,2,4,0", "3,2,4,1", "8,1,4,0,1", "7,1,2,0,1",
                                    "2,4,2,1,1", "4,2,2,2,1", "1,8,2,2,0", "1,8,4,2,1", "0,0,4,0,1,1",
                                    "0,0,2,0,0,0", "0,0,2,1,1", "0,0,2,2,0", "0,0,4,2,1",
                                    "0,0,2,0,-1,1,0", "0,0,4,0,-1,0,1", "4,2,2,0,-1,1,0",
                                    "0,0,2,0,-1,1,1,1", "0,0,2,1,2,1,1,2", "3,2,2,2,2,1,1,2", "1,8,2,2,2,0,1,2",
                                    "0,0,2,4,2,1,1,2", "0,0,2,4,2,1,1,1", "5,1,2,4,-1,1,1,0", "0,0,2,1,2,1,1,1",
                                    "0,0,4,2,1,1,1,2", "0,0,2,1,3", "0,0,4,1,3", "0,0,2,2,3", "0,0,4,2,3",
                                    "2,4,2,2,3", "0,0,2,0,4", "0,0,4,1,4", "0,0,2,2,4", "2,4,2,2,4"])
def test_gemv_launch_variants(launch, monkeypatch):
    """The tuning sweep's APT_FP4_GEMV variants (the kernel reads the variable at each call):
    8-, 16- and 32-row x blocks, 1-8 K parts, warps per block not dividing N's tiles, one or two
    tiles per warp (an odd number of tiles: N = 300), both storage orders, x with one or two
    buffers, per chunk, refilled chunk by chunk, or from a packed copy (or the heuristic's
    choice), 2 or 4 stages, the heuristic's block shape
    balanced or not, weights loaded with L2 evict_first or not, every format (the other formats,
    and shapes not built, fall back to the heuristic's stages, x mode and tiles per warp)."""
    monkeypatch.setenv("APT_FP4_GEMV", launch)
    for fmt in FORMATS:
        for m in (1, 9, 16, 33, 64):
            for sm in (False, True):
                _check(fmt, m, torch.bfloat16, True, n=300, k=4192, apt_seed=7, step_major=sm)


@needs_cuda_build
@pytest.mark.parametrize("min_steps", [1, 2, 3])
def test_gemv_heuristic_min_steps_per_part(min_steps, monkeypatch):
    """APT_FP4_GEMV's ninth field: the heuristic's K parts keep at least min_steps steps, so short K
    (here 6 steps of 128 columns, and 3) is split across warps, K parts left without steps
    included (6 steps over 4 parts of 2)."""
    monkeypatch.setenv("APT_FP4_GEMV", f"0,0,2,0,-1,1,1,0,{min_steps}")
    for fmt in FORMATS:
        for m in (1, 16, 33, 128):
            _check(fmt, m, torch.bfloat16, True, n=768, k=768, apt_seed=5)
            _check(fmt, m, torch.bfloat16, False, n=200, k=300, apt_seed=6)


# wgmma with x copied word by word (mma 1), transposed in shared memory (mma 2) and rearranged once,
# then staged by bulk copies (mma 3).
WGMMA_CONFIGS = ["17,1,0,2,32,1", "17,2,0,2,32,1", "17,1,0,1,64,1", "1,2,5,1,64,1", "17,1,0,2,64,1", "17,2,3,2,64,1",
                 "17,1,0,1,128,1", "17,1,3,1,128,1", "1,1,0,1,8,1", "1,2,0,2,8,1", "1,1,0,1,16,1", "1,1,3,2,16,1",
                 "17,1,0,2,32,2", "1,2,5,1,64,2", "17,1,0,2,64,2", "17,2,3,2,64,2", "17,1,0,1,128,2",
                 # stream-K (splits -1): output blocks' K steps shared evenly by one block per slot
                 "17,1,-1,2,32,2", "1,1,-1,1,64,2", "1,1,-1,2,64,2", "17,1,-1,1,128,2",
                 # wgmma slices per commit group (j_group 2)
                 "1,1,-1,2,64,2,2", "17,1,0,2,32,2,2", "1,1,0,1,128,2,2", "17,1,-1,1,128,2,2", "17,2,0,2,64,2,2",
                 "1,1,-1,2,32,2,2",
                 # the 2 x 128 tile (transposing product only)
                 "17,1,0,2,128,2", "17,1,-1,2,128,2", "17,1,-1,2,128,2,2",
                 # x rearranged once and staged by bulk copies (mma 3: stream-K, 2 x 64, 2 x 128, 1 x 128)
                 "17,1,-1,2,128,3", "17,1,-1,2,128,3,2", "1,1,-1,2,64,3", "17,1,-1,2,64,3,2",
                 "17,1,-1,1,128,3", "17,1,-1,1,128,3,2",
                 # stream-K with whole workers per output block (splits -2)
                 "17,1,-2,1,128,3,2", "1,1,-2,2,64,3,2", "17,1,-2,2,64,2,2",
                 # the same with at most 1 or 2 workers per output block (the eighth field)
                 "17,1,-2,1,128,3,2,2", "1,1,-2,2,64,3,2,1",
                 # whole workers in thread-block clusters (splits -3), as many as fit or 3 per cluster
                 "17,1,-3,1,128,3,2", "1,1,-3,2,64,3,2", "17,1,-3,2,128,3,2", "1,1,-3,1,128,3,2,3"]


def _wgmma_runs() -> bool:
    """The wgmma GEMM runs where the build has sm_90a code and the GPU is compute capability 9.0."""
    return torch.cuda.is_available() and wgmma_gemm_runs(torch.device(DEV))


def probe_gemm_mapping(m: int, n: int, k: int) -> None:
    """Structured probe of the GEMM's operand layouts (run in a child with APT_FP4_GEMM set):
    x's row r is the unit vector of column c(r) = (37 r + 5) mod K, so output row r must equal
    the dequantized weight's column c(r) up to bfloat16 rounding. On a mismatch it says, per
    wrong row, which weight column the row matched instead (the x layout in shared memory) or
    that it matched none (the weight fragments or the accumulators)."""
    g = torch.Generator().manual_seed(5)
    q = quantize(_weight(n, k, g).to(DEV), "nvfp4")
    t = tile(q)
    w = t.dequantize()  # float32 [n, k]
    cols = [(37 * r + 5) % k for r in range(m)]
    x = torch.zeros(m, k, dtype=torch.bfloat16, device=DEV)
    x[torch.arange(m), torch.tensor(cols)] = 1.0
    y = t.linear(x).float()
    want = w[:, cols].T.to(torch.bfloat16).float()
    bad = [r for r in range(m) if not torch.allclose(y[r], want[r], rtol=1e-2, atol=1e-6)]
    if bad:
        wt = w.T.to(torch.bfloat16).float()  # [k, n]: candidate rows
        found = []
        for r in bad[:8]:
            hit = torch.nonzero(torch.isclose(wt, y[r]).all(dim=1)).flatten().tolist()
            found.append(f"row {r}: wanted column {cols[r]}, matches column(s) {hit[:4] or 'none'}")
        raise AssertionError(f"{len(bad)} of {m} rows wrong (M={m}, N={n}, K={k}); " + "; ".join(found))


@needs_cuda_build
@pytest.mark.parametrize("gemm", ["17,1,0,2,32,1", "17,1,0,1,64,1", "17,1,0,1,128,1", "1,1,0,1,16,1",
                                  "17,1,0,2,64,2", "17,1,0,1,128,2",
                                  "17,1,0,2,64,2,2", "17,1,-1,1,128,2,2", "17,1,-1,2,128,2,2", "17,1,-1,2,128,3",
                                  "17,1,-1,2,64,3,2", "17,1,-1,1,128,3,2"])
def test_wgmma_gemm_operand_layouts(gemm, monkeypatch):
    """The wgmma GEMM on one-hot rows of x (probe_gemm_mapping), for n = 32, 64, 128 and 16 rows
    of x per instruction, x copied word by word (mma 1), transposed in shared memory (mma 2) or rearranged once and staged
    by bulk copies (mma 3): a wrong shared-memory layout of x or wrong register fragments name themselves in the failure
    message."""
    if not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    monkeypatch.setenv("APT_FP4_GEMM", gemm)
    probe_gemm_mapping(128, 256, 512)
    probe_gemm_mapping(40, 300, 4192)


@needs_cuda_build
@pytest.mark.parametrize("gemm", ["17,1,0,1,8,2", "17,1,0,2,64,3", "17,4,0,2,32,1", "17,2,0,1,128,2", "17,1,0,2,48",
                                  "17,2,-1,2,64,2", "17,1,-1,2,64,0", "17,1,-3,2,64,2", "17,1,0,2,64,2,3",
                                  "17,1,0,2,64,1,2", "17,1,0,1,64,2,2", "17,1,0,2,64,0,2", "17,1,0,2,32,2,4",
                                  "17,1,-1,2,64,2,4", "17,1,0,1,128,2,4", "17,1,0,2,128,1", "17,2,0,2,128,2",
                                  "17,1,0,2,64,3", "17,2,-1,2,64,3", "17,1,-1,1,64,3", "17,1,-1,2,32,3", "17,1,-1,2,64,4",
                                  "17,1,-1,2,64,3,2,2", "17,1,-2,2,64,3,2,-1", "17,1,-3,2,64,3", "17,1,-4,2,64,3,2",
                                  "17,1,-3,2,64,3,2,9"])
def test_gemm_config_rejects_what_is_not_built(gemm, monkeypatch):
    """APT_FP4_GEMM naming a product, K parts or warp tile that no kernel was built for (the
    transposing wgmma at 8 rows, mma 3, wgmma with 4 K parts, 1 x 128 with 2 K parts: over the
    shared memory, 48 rows; stream-K with 2 K parts or mma.sync, splits -3 with the transposing
    product or one slice per group, splits -4; 3 wgmma slices per
    group, or 2 / 4 with word copies, the 1 x 64 tile or mma.sync, 4 with 2 x 32; 2 x 128 with word
    copies or 2 K parts; the bulk product (mma 3) without stream-K, with 2 K parts or a tile not built
    for it; mma 4; a cap on workers per output block without splits -2 or -3, below 0, or above 8
    in clusters) is a ValueError
    that quotes the variable, not a launch."""
    monkeypatch.setenv("APT_FP4_GEMM", gemm)
    with pytest.raises(ValueError, match="APT_FP4_GEMM"):
        _check("nvfp4", 64, torch.bfloat16, False, n=300, k=4192, apt_seed=17)
    monkeypatch.setenv("APT_FP4_GEMM", "17")  # a good value after a bad one runs
    _check("nvfp4", 64, torch.bfloat16, False, n=300, k=4192, apt_seed=17)


@needs_cuda_build
def test_wgmma_gemm_refused_where_it_cannot_run(monkeypatch):
    """Asking for the wgmma GEMM on a build without sm_90a code or on another GPU is a clear
    error naming APT_FP4_GEMM, not a launch of a kernel the GPU cannot run."""
    if _wgmma_runs():
        pytest.skip("this build and GPU run the wgmma GEMM")
    for gemm in ("17,1,0,2,64,1", "17,1,0,2,64,2"):
        monkeypatch.setenv("APT_FP4_GEMM", gemm)
        with pytest.raises(ValueError, match="sm_90a"):
            _check("nvfp4", 64, torch.bfloat16, False, n=300, k=4192, apt_seed=16)


@needs_cuda_build
@pytest.mark.parametrize("gemm", ["17,2", "17,1", "1,2", "17,2,1", "17,4,0,4", "17,1,3,4", "1,2,5,2", "17,1,0,2,32",
                                  "17,4,3,2,32", "17,2,0,1,64",
                                  *(pytest.param(c, id=f"wgmma-{c}") for c in WGMMA_CONFIGS)])
def test_tiled_gemm_path(gemm, monkeypatch):
    """The tiled GEMM (csrc/fp4/fp4_gemm_tiled_cuda.cu,
    APT_FP4_GEMM="min_rows,k_parts[,splits[,tiles_per_warp[,rows[,mma[,j_group[,workers]]]]]]", read at each
    call), every warp tile built for mma.sync and for wgmma (mma 1 and 2, on sm_90a builds and
    compute capability 9.0 GPUs): nvfp4 and mxfp4 with bfloat16 x against the reference at M
    around its 32-, 64- and 128-row blocks, a number of tiles that leaves a warp's last tiles
    missing (N = 300: 19 tiles; with wgmma, whole warpgroups and single warps without a tile of
    their own), K = 4192 (33 steps: K parts and splits of unequal length), blocks along K chosen
    per shape (0) or given or stream-K (-1: with few output blocks, many blocks add pieces of one;
    -2: a whole number of blocks per output block, each block's steps within one, as many as fit or
    at most `workers`; -3: the same in thread-block clusters, one per output block),
    with bias and with GELU; rows below min_rows, nf4 and float16 x still take the GEMV and stay
    correct."""
    if gemm in WGMMA_CONFIGS and not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    monkeypatch.setenv("APT_FP4_GEMM", gemm)
    for fmt in ("nvfp4", "mxfp4"):
        for m in (1, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 129, 256, 1000, 4096):
            _check(fmt, m, torch.bfloat16, m % 2 == 1, n=300, k=4192, apt_seed=11)
        _check(fmt, 64, torch.bfloat16, True, n=300, k=4192, apt_seed=12, step_major=True)
        _check(fmt, 40, torch.bfloat16, False, n=4096, k=4096, apt_seed=13)
    _check("nf4", 64, torch.bfloat16, True, n=300, k=4192, apt_seed=14)
    _check("nvfp4", 64, torch.float16, True, n=300, k=4192, apt_seed=15)
    check_gelu(80)


@needs_cuda_build
@pytest.mark.parametrize("shape", [(4096, 4096), (1000, 14336), (4096, 14336)])
def test_gemv_large_shapes(shape, apt_seed):
    _check("nvfp4", 1, torch.bfloat16, False, *shape, apt_seed=apt_seed)
    _check("nvfp4", 16, torch.bfloat16, True, *shape, apt_seed=apt_seed)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m, dt", [(9, torch.float16), (16, torch.bfloat16)])
def test_gemv_packed_x_default(fmt, m, dt, apt_seed):
    """9..16 rows of 16-bit x on a weight of at least 512 tiles and 16384 (tile, step) blocks
    (8200 x 4096: 513 tiles, the last one partial, 16416 blocks) take packed x by default
    (pack_x_kernel, then the GEMV by programmatic dependent launch)."""
    _check(fmt, m, dt, m % 2 == 1, 8200, 4096, apt_seed=apt_seed)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_tile_on_gpu_equals_dequantize(fmt, apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(_weight(65, 300, g).to(DEV), fmt)
    t = tile(q)
    assert torch.equal(t.dequantize(), q.dequantize(torch.float32))
    tc = tile(q.to("cpu"))
    assert torch.equal(t.tiles.cpu(), tc.tiles) and torch.equal(t.tile_scales.cpu(), tc.tile_scales)
    w = t.to_weight()  # the canonical tensors back, on the GPU, bit for bit
    bits = (lambda a: a.view(torch.uint8)) if fmt == "nvfp4" else (lambda a: a)
    assert w.packed.is_cuda and torch.equal(w.packed, q.packed) and torch.equal(bits(w.scales), bits(q.scales))
    assert torch.equal(w.tensor_scale.reshape(()), q.tensor_scale.reshape(()))


@needs_cuda_build
def test_gelu_epilogue(apt_seed):
    check_gelu(3, apt_seed)


def check_gelu(m: int, seed: int = 0) -> None:
    """The fused GELU epilogue with a bfloat16 bias, m rows of bfloat16 x, against the reference."""
    g = torch.Generator().manual_seed(seed)
    q = quantize(_weight(70, 256, g).to(DEV), "nvfp4")
    x = torch.randn(m, 256, generator=g).to(DEV, torch.bfloat16)
    bias = torch.randn(70, generator=g).to(DEV, torch.bfloat16)
    y = tile(q).linear(x, bias, gelu=True)
    h = ref.linear(x.cpu().double(), q.packed.cpu(), q.scales.cpu(), q.tensor_scale.cpu(), bias.cpu().double(),
                   "nvfp4", 16)
    assert _rel_err(y, torch.nn.functional.gelu(h)) < 1e-2


@needs_cuda_build
def test_fp4linear_uses_tiled_path_for_inference(apt_seed):
    torch.manual_seed(apt_seed)
    layer = FP4Linear.from_linear(torch.nn.Linear(512, 300).to(DEV, torch.bfloat16), fmt="nvfp4")
    x = torch.randn(4, 512, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        y = layer(x)
    assert layer._tiled is not None
    want = torch.ops.apt.fp4_linear(x, layer.packed, layer.scales, layer.tensor_scale, layer.bias, "nvfp4", 16)
    assert _rel_err(y, want) < 1e-2
    y_train = layer(x.requires_grad_())  # needs a gradient: the canonical op
    y_train.sum().backward()
    assert x.grad is not None
    layer.to("cpu")
    assert layer._tiled is None


@needs_cuda_build
@pytest.mark.parametrize(("fmt", "dtype", "rows", "n", "k", "tiled"), [
    ("nvfp4", torch.bfloat16, 128, 8192, 256, True), ("nvfp4", torch.bfloat16, 129, 8191, 256, False),
    ("nvfp4", torch.bfloat16, 129, 8192, 256, "hopper"), ("mxfp4", torch.bfloat16, 512, 8192, 256, "hopper"),
    ("nvfp4", torch.bfloat16, 513, 8192, 256, False),
    ("nvfp4", torch.bfloat16, 129, 256, 8192, "hopper"), ("mxfp4", torch.bfloat16, 384, 256, 8192, "hopper"),
    ("nvfp4", torch.bfloat16, 385, 256, 8192, False),
    ("nvfp4", torch.bfloat16, 129, 4096, 4096, "hopper"), ("mxfp4", torch.bfloat16, 256, 4096, 4096, "hopper"),
    ("nvfp4", torch.bfloat16, 257, 4096, 4096, False), ("nvfp4", torch.bfloat16, 129, 4095, 4096, False),
    ("mxfp4", torch.bfloat16, 128, 8192, 256, True), ("nf4", torch.bfloat16, 64, 8192, 256, True),
    ("nf4", torch.bfloat16, 65, 8192, 256, False), ("nf4", torch.bfloat16, 129, 8192, 256, False),
    ("nvfp4", torch.float16, 64, 8192, 256, True), ("nvfp4", torch.float16, 65, 8192, 256, False),
    ("nvfp4", torch.float32, 16, 8192, 256, True), ("nvfp4", torch.float32, 17, 8192, 256, False)])
def test_fp4linear_tiled_path_row_limit(fmt, dtype, rows, n, k, tiled, apt_seed):
    """FP4Linear's measured crossover (apt_ext/nn/fp4_linear.py): the tiled kernels up to 128 rows
    of bfloat16 x for nvfp4 / mxfp4 (where the wgmma GEMM runs, "hopper": up to 512 on weights of
    8192 rows, 384 on weights of 8192 columns, 256 on other weights of 4096 rows and columns), 64
    rows of other 16-bit x and nf4, 16 of float32 x, fp4_linear above; both give the same result.
    N = 8192 rows: from 65 rows of x (33 where wgmma runs) the tiled op takes its GEMM there
    (csrc/fp4/fp4_gemm_tiled_cuda.h)."""
    if tiled == "hopper":
        tiled = wgmma_gemm_runs(torch.device(DEV))
    torch.manual_seed(apt_seed)
    layer = FP4Linear.from_linear(torch.nn.Linear(k, n), fmt=fmt).to(DEV)
    x = torch.randn(rows, k, device=DEV, dtype=dtype)
    with torch.no_grad():  # inference: the bias parameter needs no gradient here
        assert layer._takes_tiled_path(x) is tiled
        y = layer(x)
    assert (layer._tiled is not None) is tiled
    want = torch.ops.apt.fp4_linear(x, layer.packed, layer.scales, layer.tensor_scale, layer.bias.to(dtype),
                                    fmt, layer.block_size)
    assert _rel_err(y, want) < _tol(fmt, dtype)


@needs_cuda_build
def test_fp4linear_tiled_switch_lets_the_copy_go(apt_seed):
    """``tiled = False`` on a layer: no tiled copy (one built before is let go), fp4_linear's result."""
    torch.manual_seed(apt_seed)
    layer = FP4Linear.from_linear(torch.nn.Linear(256, 512), fmt="nvfp4").to(DEV)
    x = torch.randn(4, 256, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        layer(x)
        assert layer._tiled is not None
        layer.tiled = False
        y = layer(x)
        # the layer's own arguments: its float32 bias enters the epilogue unrounded
        want = torch.ops.apt.fp4_linear(x, layer.packed, layer.scales, layer.tensor_scale, layer.bias,
                                        "nvfp4", layer.block_size)
    assert layer._tiled is None
    assert torch.equal(y, want)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_fp4linear_release_canonical_on_cuda(fmt, apt_seed):
    """release_canonical() on CUDA: one 4-bit copy held, inference up to the row limit on the tiled
    kernels with the same result and no warning, a larger call rebuilds the tensors (warns, same
    result), state_dict bit for bit."""
    import warnings

    torch.manual_seed(apt_seed)
    ref_layer = FP4Linear.from_linear(torch.nn.Linear(512, 640), fmt=fmt).to(DEV)
    layer = FP4Linear.from_linear(torch.nn.Linear(512, 640), fmt=fmt).to(DEV)
    layer.load_state_dict(ref_layer.state_dict())
    state = {k: v.clone() for k, v in ref_layer.state_dict().items()}
    x = torch.randn(8, 512, device=DEV, dtype=torch.bfloat16)
    big = torch.randn(300, 512, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        layer.release_canonical()
        assert layer.packed.numel() == 0 and layer.scales.numel() == 0 and layer._tiled.tiles.is_cuda
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = layer(x)
        assert torch.equal(y, ref_layer(x))
        with pytest.warns(RuntimeWarning, match="release_canonical"):
            yb = layer(big)
        assert torch.equal(yb, ref_layer(big))
    bits = lambda t: t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t  # noqa: E731
    for k, v in layer.state_dict().items():
        assert torch.equal(bits(v), bits(state[k])), k


# the wgmma GEMM's kernel names: 2 (1) tiles per warp, 16, 8 or 4 blocks of 8 rows of x, bulk (3) or
# transposing (2) product, stream-K (true), wgmma slices per commit group (2; 1 for the transposing
# 2 x 32)
_BULK128 = "2, 16, (apt::fp4::cuda::GemmProduct)3, true, 2, false>"
_BULK1X128 = "1, 16, (apt::fp4::cuda::GemmProduct)3, true, 2, false>"
_BULK64 = "2, 8, (apt::fp4::cuda::GemmProduct)3, true, 2, false>"
_SK64 = "2, 8, (apt::fp4::cuda::GemmProduct)2, true, 2, false>"
_CLUSTER1X128 = _BULK1X128.replace("false>", "true>")  # the same tiles adding their sums in clusters
_CLUSTER64 = _BULK64.replace("false>", "true>")
_SK32 = "2, 4, (apt::fp4::cuda::GemmProduct)2, true, 1, false>"


@needs_cuda_build
@pytest.mark.parametrize(("rows", "n", "k", "fmt", "kernel", "wgmma_kernel"), [
    (32, 8192, 256, "nvfp4", "gemv_tiled", "gemv_tiled"), (33, 8192, 256, "nvfp4", "gemv_tiled", _BULK64),
    (64, 8192, 256, "mxfp4", "gemv_tiled", _BULK64), (65, 8192, 256, "nvfp4", "gemm_tiled", _BULK1X128),
    (33, 8192, 4096, "nvfp4", "gemv_tiled", _CLUSTER64), (64, 8192, 4096, "mxfp4", "gemv_tiled", _CLUSTER64),
    (129, 5120, 4096, "nvfp4", "gemv_tiled", _BULK1X128), (129, 4096, 4096, "mxfp4", "gemv_tiled", _CLUSTER1X128),
    (65, 8191, 256, "nvfp4", "gemv_tiled", "gemv_tiled"), (64, 16384, 256, "mxfp4", "gemv_tiled", _BULK64),
    (65, 16384, 256, "nvfp4", "gemm_tiled", _BULK128),
    (96, 8192, 256, "mxfp4", "gemm_tiled", _BULK1X128),
    (128, 8192, 256, "mxfp4", "gemm_tiled", _BULK1X128), (129, 8192, 256, "nvfp4", "gemm_tiled", _BULK128),
    (96, 16384, 256, "nvfp4", "gemm_tiled", _BULK128),
    (32, 512, 8192, "nvfp4", "gemv_tiled", "gemv_tiled"), (33, 512, 8192, "mxfp4", "gemv_tiled", _BULK64),
    (64, 512, 8192, "nvfp4", "gemv_tiled", _BULK64), (65, 512, 8192, "nvfp4", "gemv_tiled", _BULK1X128),
    (64, 512, 8191, "nvfp4", "gemv_tiled", "gemv_tiled"),
    (128, 512, 8192, "mxfp4", "gemv_tiled", _BULK1X128), (129, 512, 8192, "nvfp4", "gemv_tiled", _CLUSTER1X128),
    (256, 512, 8192, "mxfp4", "gemv_tiled", _CLUSTER1X128), (257, 512, 8192, "nvfp4", "gemv_tiled", _BULK128),
    (128, 512, 8191, "mxfp4", "gemv_tiled", "gemv_tiled"),
    (64, 4096, 4096, "nvfp4", "gemv_tiled", "gemv_tiled"), (65, 4096, 4096, "mxfp4", "gemv_tiled", _CLUSTER1X128),
    (256, 4096, 4096, "nvfp4", "gemv_tiled", _CLUSTER1X128), (257, 4096, 4096, "nvfp4", "gemv_tiled", _SK64),
    (128, 4095, 4096, "nvfp4", "gemv_tiled", "gemv_tiled"),
    (255, 8191, 256, "nvfp4", "gemv_tiled", "gemv_tiled"), (256, 4096, 256, "mxfp4", "gemv_tiled", _SK64),
    (511, 4096, 256, "nvfp4", "gemv_tiled", _SK64), (512, 4096, 256, "nvfp4", "gemv_tiled", _BULK128),
    (65, 8192, 256, "nf4", "gemv_tiled", "gemv_tiled"),
    (23, 16384, 256, "nvfp4", "gemv_tiled", "gemv_tiled"), (24, 16384, 256, "nvfp4", "gemv_tiled", _SK32),
    (32, 16384, 256, "mxfp4", "gemv_tiled", _SK32), (33, 16384, 256, "nvfp4", "gemv_tiled", _BULK64),
    (32, 16383, 256, "nvfp4", "gemv_tiled", "gemv_tiled")])
def test_tiled_op_kernel_choice(rows, n, k, fmt, kernel, wgmma_kernel, apt_seed):
    """fp4_linear_tiled's default choice between its GEMV and GEMM (csrc/fp4/fp4_gemm_tiled_cuda.h,
    nvfp4 / mxfp4 with bfloat16 x): without wgmma the mma.sync GEMM from 65 rows of x on weights of
    8192 rows; where the wgmma GEMM runs (sm_90a build, compute capability 9.0) its stream-K forms
    instead: on weights of 16384 rows from 24 rows (2 x 32 tile, transposing product, up to 32 rows;
    above it 2 x 64 with two wgmma slices per commit group and the bulk product, up to 64 rows); the
    same bulk 2 x 64 at 33-64 rows on weights of 8192 rows or K of 8192; its bulk 1 x 128 tile at
    65-128 rows on weights of 8192 to 16383 rows, at 65-256 rows on other weights of 4096 rows and
    columns or of K 8192 or more; its 2 x 128 tile (bulk product, two slices per group) on
    weights of 16384 rows from 65 rows, on weights of 8192 rows from 129 rows, where K is 8192 or
    more from 257 rows and on every weight from 512 rows; the transposing 2 x 64 on the other
    weights at 256-511 rows; the 2 x 64 on weights of 8192-16383 rows with K below 8192, and the
    1 x 128 on weights of fewer rows with K below 8192 or (129-256 rows) of K 8192, add their
    workers' sums in thread-block clusters, unless that leaves one worker per output block (K of
    256: two steps; 5120 rows at 129 rows of x: 80 output blocks), where the plain kernel runs.
    Read off the profiler's kernel names (the template arguments: tiles per warp, 8-row blocks of
    x, product, stream-K, slices per group, clusters), with the result checked against the
    reference."""
    want_kernel = wgmma_kernel if _wgmma_runs() else kernel
    g = torch.Generator().manual_seed(apt_seed)
    t = tile(quantize(_weight(n, k, g).to(DEV), fmt))
    x = torch.randn(rows, k, generator=g).to(DEV, torch.bfloat16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = t.linear(x)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if "tiled_kernel" in e.name]
    assert names and all(want_kernel in name for name in names), names
    want = torch.nn.functional.linear(x.float(), t.dequantize().to(DEV))
    assert _rel_err(y, want) < _tol(fmt, torch.bfloat16)


@needs_cuda_build
@pytest.mark.parametrize(("rows", "n", "k", "block_rows", "workers_per_block"), [
    (128, 4096, 4096, 128, lambda slots: min(slots // 32, 3)),  # 1 x 128: 32 output blocks, clusters of <= 3
    (128, 4096, 14336, 128, lambda slots: min(slots // 32, 16)),  # the same of 112 steps: no clusters
    (80, 14336, 4096, 128, lambda slots: 1),  # 112 output blocks: one worker each, no gather
    # a cluster route (1 x 128, 5120 rows) with 2 blocks of x: 80 output blocks, no clusters where one worker fits each
    (200, 5120, 4096, 128, lambda slots: 2 * max(1, min(slots // 80, 3))),
    (48, 14336, 4096, 256, lambda slots: min(slots // 56, 3)),  # 2 x 64: 56 output blocks, clusters of <= 3
    (96, 28672, 8192, 256, lambda slots: 1),  # 2 x 128: 112 output blocks
    (256, 28672, 8192, 256, None)])  # 224 output blocks outnumber the slots: kStreamK's one per slot
def test_stream_k_whole_workers_grid(rows, n, k, block_rows, workers_per_block, apt_seed, tmp_path):
    """The routed 1 x 128, 2 x 64 and 2 x 128 tiles (block_rows weight rows per output block) run
    stream-K with whole workers per output block (kStreamKWhole; the cluster routes kStreamKCluster,
    at most 3 blocks per cluster): a grid of output blocks x floor(slots / output blocks) blocks (at
    most half the steps), where the output blocks fit the
    slots (one block of 256 threads per multiprocessor), else one block per slot; read off the
    profiler's trace, the result checked against the reference."""
    if not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    slots = torch.cuda.get_device_properties(DEV).multi_processor_count
    want = n // block_rows * workers_per_block(slots) if workers_per_block else slots
    _check_gemm_grid(rows, n, k, want, apt_seed, tmp_path)


def _gemm_grids(t, x: torch.Tensor, tmp_path) -> tuple[torch.Tensor, list]:
    """t.linear(x) and the grids of the GEMM kernels it launched (the profiler's chrome trace)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = t.linear(x)
        torch.cuda.synchronize()
    prof.export_chrome_trace(str(tmp_path / "trace.json"))
    trace = json.loads((tmp_path / "trace.json").read_text())
    return y, [e["args"]["grid"] for e in trace["traceEvents"]
               if e.get("cat") == "kernel" and "gemm_tiled_kernel" in e.get("name", "")]


def _check_gemm_grid(rows: int, n: int, k: int, want: int, seed: int, tmp_path) -> None:
    """One nvfp4 call of the tiled op (rows x k bfloat16 x, an n x k weight) launches the GEMM once
    on a grid of `want` blocks and matches the reference."""
    g = torch.Generator().manual_seed(seed)
    t = tile(quantize(_weight(n, k, g).to(DEV), "nvfp4"))
    x = torch.randn(rows, k, generator=g).to(DEV, torch.bfloat16)
    y, grids = _gemm_grids(t, x, tmp_path)
    assert grids == [[want, 1, 1]], (grids, want)
    assert _rel_err(y, torch.nn.functional.linear(x.float(), t.dequantize().to(DEV))) < _tol("nvfp4", torch.bfloat16)


@needs_cuda_build
@pytest.mark.parametrize(("gemm", "rows", "n", "k"), [("1,1,-{},1,128,3,2,{}", 128, 4096, 4096),
                                                   ("1,1,-{},2,64,3,2,{}", 48, 4096, 4096),
                                                   ("1,1,-{},2,128,3,2,{}", 200, 4096, 1000)])
@pytest.mark.parametrize("workers", [2, 3])
def test_stream_k_cluster_gather_matches_global(gemm, rows, n, k, workers, apt_seed, monkeypatch):
    """Whole workers adding their sums in a thread-block cluster (splits -3, distributed shared
    memory) give the same bits as the same workers adding them through global memory (splits -2:
    both add the workers' sums in block order), for the bulk 1 x 128, 2 x 64 and 2 x 128 (K 1000:
    8 steps, the last one partial), both formats. The shapes leave at least 3 slots per output
    block, so that both forms run `workers` per output block."""
    if not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    g = torch.Generator().manual_seed(apt_seed)
    for fmt in ("nvfp4", "mxfp4"):
        t = tile(quantize(_weight(n, k, g).to(DEV), fmt))
        x = torch.randn(rows, k, generator=g).to(DEV, torch.bfloat16)
        out = {}
        for splits in ("2", "3"):
            monkeypatch.setenv("APT_FP4_GEMM", gemm.format(splits, workers))
            out[splits] = t.linear(x)
        assert torch.equal(out["2"], out["3"]), fmt
        want = torch.nn.functional.linear(x.float(), t.dequantize().to(DEV))
        assert _rel_err(out["3"], want) < _tol(fmt, torch.bfloat16)


@needs_cuda_build
def test_stream_k_clusters_all_resident(apt_seed, tmp_path, monkeypatch):
    """Clusters (splits -3) of up to the portable 8 blocks on the 1 x 128 on 4096 x 4096 at 128 rows
    (32 output blocks): the grid is 32 clusters of c blocks, 2 <= c <= slots // 32, c the largest
    size at which all 32 are resident at once (cudaOccupancyMaxActiveClusters); the result has the
    bits of c workers adding their sums through global memory (splits -2, eighth field c)."""
    if not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    g = torch.Generator().manual_seed(apt_seed)
    t = tile(quantize(_weight(4096, 4096, g).to(DEV), "nvfp4"))
    x = torch.randn(128, 4096, generator=g).to(DEV, torch.bfloat16)
    monkeypatch.setenv("APT_FP4_GEMM", "1,1,-3,1,128,3,2,8")
    y, grids = _gemm_grids(t, x, tmp_path)
    slots = torch.cuda.get_device_properties(DEV).multi_processor_count
    assert len(grids) == 1 and grids[0][0] % 32 == 0 and 2 <= grids[0][0] // 32 <= min(slots // 32, 8), grids
    monkeypatch.setenv("APT_FP4_GEMM", f"1,1,-2,1,128,3,2,{grids[0][0] // 32}")
    assert torch.equal(y, t.linear(x))


@needs_cuda_build
@pytest.mark.parametrize("workers", [1, 2, 3, 64])
def test_stream_k_whole_workers_cap(workers, apt_seed, tmp_path, monkeypatch):
    """APT_FP4_GEMM's eighth field caps the whole workers per output block: the 1 x 128 on 4096 x
    4096 at 128 rows (32 output blocks of 32 steps) on 32 x min(workers, slots // 32, 16) blocks."""
    if not _wgmma_runs():
        pytest.skip("the wgmma GEMM needs an sm_90a build (APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU")
    monkeypatch.setenv("APT_FP4_GEMM", f"1,1,-2,1,128,3,2,{workers}")
    slots = torch.cuda.get_device_properties(DEV).multi_processor_count
    _check_gemm_grid(128, 4096, 4096, 32 * min(workers, slots // 32, 16), apt_seed, tmp_path)


@needs_cuda_build
def test_cuda_graph_capture_tiled(apt_seed):
    """M = 1 and 40 through FP4Linear's tiled GEMV, M = 100 through the tiled GEMM (first layer,
    8192 rows: blocks along K, their workspace allocated inside the capture) and GEMV (second),
    M = 200 through the canonical op, in the same graph test."""
    torch.manual_seed(apt_seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 8192), torch.nn.GELU(), torch.nn.Linear(8192, 128))
    model = apt_ext.quantize_(model.to(DEV, torch.bfloat16), fmt="nvfp4")
    for m in (1, 40, 100, 200):
        assert_cuda_graph_replay_matches_eager(model, torch.randn(m, 256, device=DEV, dtype=torch.bfloat16))


@needs_cuda_build
def test_cuda_graph_capture_packed_x(apt_seed):
    """12 and 16 rows on a 4096 -> 8192 layer (16384 (tile, step) blocks): packed x by default,
    its copy allocated and both kernels (the second a programmatic dependent launch) captured."""
    torch.manual_seed(apt_seed)
    model = apt_ext.quantize_(torch.nn.Sequential(torch.nn.Linear(4096, 8192)).to(DEV, torch.bfloat16), fmt="nvfp4")
    for m in (12, 16):
        assert_cuda_graph_replay_matches_eager(model, torch.randn(m, 4096, device=DEV, dtype=torch.bfloat16))


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck_tiled_cuda(fmt, apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(_weight(24, 200, g).to(DEV), fmt)
    t = tile(q)
    x = torch.randn(3, 200, generator=g).to(DEV, torch.bfloat16)
    bias = torch.randn(24, generator=g).to(DEV)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, bias, fmt, 24, 200, False))
    torch.library.opcheck(torch.ops.apt.fp4_untile.default, (t.tiles, t.tile_scales, t.out_scale, fmt, 24, 200))


@needs_cuda_build
def test_offloaded_fp4linear_keeps_no_tiled_copy(apt_seed, tmp_path):
    """A layer paged by apt_ext.vgpu.offload must not keep its tiled copy on the device (it would
    hold the whole 4-bit model there): it runs the canonical op instead."""
    from apt_ext.vgpu import VGPUStack, offload

    torch.manual_seed(apt_seed)
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(4)]).to(DEV, torch.bfloat16)
    model = apt_ext.quantize_(model, fmt="nvfp4").eval()
    x = torch.randn(2, 512, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)  # resident: builds the tiled copies
    assert all(m._tiled is not None for m in model)
    with VGPUStack([{"device": DEV, "capacity_mb": 0.5}, {"device": "cpu", "capacity_mb": 64}]) as st:
        handle = offload(model, st, prefetch=1)
        with torch.no_grad():
            y = model(x)
            y = model(x)
        assert all(m._tiled is None for m in model)
        assert _rel_err(y, ref) < 1e-2
        handle.restore()
