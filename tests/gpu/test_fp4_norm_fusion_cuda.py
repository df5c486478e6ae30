"""The CUDA GEMV's RMSNorm prologue and residual epilogue (fp4_linear_tiled's rms_eps / residual,
fp4_linear_tiled_swiglu's rms_eps) against apt_ext/reference on the CPU: every format and x dtype,
1 to 64 rows, K padded and split across warps, packed x, the launch variants, the GEMM's route
(norm and residual by ATen); the norm handoff (fp4_linear_tiled_sumsq's sums of squares of its
output, rms_sumsq's sums in place of x's); apt_ext.nn's fused helpers against the composite, in a
CUDA graph and compiled.

Run:  python -m pytest tests/gpu/test_fp4_norm_fusion_cuda.py -q
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import apt_ext
from apt_ext import _native
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import sumsq_parts, tile
from apt_ext.nn import fold_rms_norm_, linear_residual, rms_norm_linear, rms_norm_swiglu, swiglu
from fp4_helpers import assert_cuda_graph_replay_matches_eager
from reference import fp4 as ref

FORMATS = ("nvfp4", "mxfp4", "nf4")
X_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
DEV = "cuda"
EPS = 1e-5
needs_cuda_build = pytest.mark.skipif(
    not _native.build_info().get("cuda"), reason="apt_ext was built without its CUDA kernels (no nvcc)")


def _tol(fmt: str, dt: torch.dtype) -> float:
    """As tests/gpu/test_fp4_gemv_cuda.py's: output rounding for bfloat16, nf4's bfloat16 decode."""
    if dt == torch.bfloat16:
        return 1e-2
    return 6e-3 if fmt == "nf4" else (2e-3 if dt == torch.float16 else 1e-5)


def _rel(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.double().cpu() - r.double().cpu()).norm() / r.double().cpu().norm())


def _check(fmt: str, m: int, dt: torch.dtype, n: int, k: int, seed: int, gelu: bool = False,
           with_residual: bool = True, with_bias: bool = True, handoff: bool = False) -> None:
    """``handoff``: the norm takes x's sums of squares in parts (rms_sumsq, as a GEMV before would
    hand them over), and the output's own sums (fp4_linear_tiled_sumsq) are checked too."""
    g = torch.Generator().manual_seed(seed)
    q = quantize((torch.randn(n, k, generator=g) * 0.05).to(DEV), fmt)
    # rows of very different scales: the norm must be per row
    x = (torch.randn(m, k, generator=g) * torch.logspace(-2, 2, m).unsqueeze(1)).to(dt).to(DEV)
    bias = torch.randn(n, generator=g).to(DEV) if with_bias else None
    residual = torch.randn(m, n, generator=g).to(dt).to(DEV) if with_residual else None
    if handoff:
        y, y_sumsq = tile(q).linear(x, bias, gelu=gelu, rms_eps=EPS, residual=residual, rms_sumsq=sumsq_parts(x),
                                    return_sumsq=True)
        assert y_sumsq.shape == (m, -(-n // 16)) and y_sumsq.dtype == torch.float32
        torch.testing.assert_close(y_sumsq, sumsq_parts(y), rtol=1e-5, atol=0)
    else:
        y = tile(q).linear(x, bias, gelu=gelu, rms_eps=EPS, residual=residual)
    want = ref.linear(ref.rms_normalized(x.cpu(), EPS), q.packed.cpu(), q.scales.cpu(), q.tensor_scale.cpu(),
                      None if bias is None else bias.cpu(), fmt, q.block_size)
    if gelu:
        want = F.gelu(want)
    if residual is not None:
        want = want + residual.cpu().double()
    assert y.dtype == dt and y.shape == (m, n) and bool(torch.isfinite(y).all())
    err = _rel(y, want)
    assert err < _tol(fmt, dt), f"relative error {err:.3g} (fmt={fmt}, M={m}, dtype={dt}, N={n}, K={k})"


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 2, 9, 16, 17, 33, 64])
@pytest.mark.parametrize("dt", X_DTYPES)
def test_gemv_norm_and_residual(fmt, m, dt, apt_seed):
    """K padded to the step (200 of 256 columns) and K split across warps (4192)."""
    _check(fmt, m, dt, 257, 200, apt_seed)
    _check(fmt, m, dt, 300, 4192, apt_seed + 1, with_bias=False)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 3, 9, 16, 33, 64])
@pytest.mark.parametrize("dt", X_DTYPES)
def test_gemv_norm_handoff(fmt, m, dt, apt_seed):
    """The sums of squares given (rms_sumsq) and taken (out_sumsq) by the GEMV: N not a multiple of
    16 (the last tile's rows past N add nothing), K padded and split across warps."""
    _check(fmt, m, dt, 257, 200, apt_seed, handoff=True)
    _check(fmt, m, dt, 300, 4192, apt_seed + 1, with_bias=False, handoff=True)


@needs_cuda_build
@pytest.mark.parametrize("m", [1, 16])
def test_gemv_norm_with_gelu_or_alone(m, apt_seed):
    _check("nvfp4", m, torch.bfloat16, 257, 1000, apt_seed, gelu=True)
    _check("nvfp4", m, torch.bfloat16, 257, 1000, apt_seed, with_residual=False, with_bias=False)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_gemv_norm_on_packed_x(fmt, apt_seed):
    """16 rows on 8200 x 4096 take packed x (test_fp4_gemv_cuda.py's test_gemv_packed_x_default):
    the sums read x as given, not the packed copy."""
    _check(fmt, 16, torch.bfloat16, 8200, 4096, apt_seed)
    _check(fmt, 16, torch.bfloat16, 8200, 4096, apt_seed, handoff=True)


@needs_cuda_build
@pytest.mark.parametrize("launch", ["8,1,4,2", "1,8,2,2,0", "3,2,2,0,-1,1,0", "0,0,2,1,3", "0,0,2,2,4",
                                    "0,0,2,1,2,1,1,2", "0,0,2,4,2,1,1,2", "2,4,2,2,3"])
def test_gemv_norm_launch_variants(launch, monkeypatch):
    """1 to 8 warps per block and K parts (the warps' partial sums of squares), x double- or
    single-buffered, per chunk, rolling or packed, 8 to 32 rows of x per block, two tiles per warp."""
    monkeypatch.setenv("APT_FP4_GEMV", launch)
    for m in (1, 9, 16, 33):
        _check("nvfp4", m, torch.bfloat16, 300, 4192, 11)
        _check("nvfp4", m, torch.bfloat16, 300, 4192, 12, handoff=True)


@needs_cuda_build
def test_gemm_route_norm_and_residual(apt_seed):
    """100 rows on 8192 rows of weight take the tiled GEMM: the norm by ATen (x rounded to bfloat16
    after it), the residual added by ATen after the GEMM."""
    _check("nvfp4", 100, torch.bfloat16, 8192, 512, apt_seed)
    _check("mxfp4", 200, torch.bfloat16, 8192, 512, apt_seed, gelu=True)
    _check("nvfp4", 100, torch.bfloat16, 8192, 512, apt_seed, handoff=True)


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 16, 100])
def test_swiglu_norm(fmt, m, apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    n, k = 8192 if m == 100 else 512, 4192
    q = quantize((torch.randn(n, k, generator=g) * 0.05).to(DEV), fmt)
    x = (torch.randn(m, k, generator=g) * 4).to(DEV, torch.bfloat16)
    bias = torch.randn(n, generator=g).to(DEV)
    w = tile(q, swiglu=True)
    y = w.swiglu_linear(x, bias, rms_eps=EPS)
    gate, up = ref.linear(ref.rms_normalized(x.cpu(), EPS), q.packed.cpu(), q.scales.cpu(), q.tensor_scale.cpu(),
                          bias.cpu(), fmt, q.block_size).chunk(2, -1)
    assert y.shape == (m, n // 2) and _rel(y, F.silu(gate) * up) < 1e-2
    # the sums of squares handed over (rms_sumsq) in place of x's
    assert _rel(w.swiglu_linear(x, bias, rms_eps=EPS, rms_sumsq=sumsq_parts(x)), F.silu(gate) * up) < 1e-2


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [8, 9, 16, 33])
def test_swiglu_norm_ahead_above_eight_rows(fmt, m, apt_seed):
    """Above 8 rows of x the SwiGLU GEMV's norm is ATen's RMSNorm ahead of the kernel (its fused norm
    and the handoff were slower there): bit for bit the composite F.rms_norm + swiglu_linear, with
    or without the sums handed over; up to 8 rows the fused norm (x not rounded after normalising),
    which differs from it."""
    g = torch.Generator().manual_seed(apt_seed)
    n, k = 512, 4192
    w = tile(quantize((torch.randn(n, k, generator=g) * 0.05).to(DEV), fmt), swiglu=True)
    x = (torch.randn(m, k, generator=g) * 4).to(DEV, torch.bfloat16)
    bias = torch.randn(n, generator=g).to(DEV)
    composite = w.swiglu_linear(F.rms_norm(x, (k,), eps=EPS), bias)
    fused = w.swiglu_linear(x, bias, rms_eps=EPS)
    handed = w.swiglu_linear(x, bias, rms_eps=EPS, rms_sumsq=sumsq_parts(x))
    if m > 8:
        assert torch.equal(fused, composite) and torch.equal(handed, composite)
    else:
        assert not torch.equal(fused, composite) and _rel(fused, composite) < 1e-2


@needs_cuda_build
@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck_norm_and_residual_cuda(fmt, apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    t = tile(quantize(torch.randn(32, 200, generator=g).to(DEV), fmt))
    x = torch.randn(3, 200, generator=g).to(DEV, torch.bfloat16)
    r = torch.randn(3, 32, generator=g).to(DEV, torch.bfloat16)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, None, fmt, 32, 200, False, EPS, r))
    s = tile(quantize(torch.randn(32, 200, generator=g).to(DEV), fmt), swiglu=True)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_swiglu.default,
                          (x, s.tiles, s.tile_scales, s.out_scale, None, fmt, 32, 200, EPS))
    parts = sumsq_parts(x)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_sumsq.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, None, fmt, 32, 200, False, EPS, r, parts))
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_swiglu.default,
                          (x, s.tiles, s.tile_scales, s.out_scale, None, fmt, 32, 200, EPS, parts))


class _Block(nn.Module):
    """A pre-norm residual block through apt_ext.nn's helpers: x + o(qkv(n1(x))), then
    x + down(swiglu(gate_up(n2(x))))."""

    def __init__(self, d: int = 512, d_ff: int = 1024) -> None:
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(d, eps=EPS), nn.RMSNorm(d, eps=EPS)
        self.qkv, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_up, self.down = nn.Linear(d, 2 * d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = linear_residual(self.o, rms_norm_linear(self.n1, self.qkv, x), x)
        return linear_residual(self.down, rms_norm_swiglu(self.n2, self.gate_up, x), x)

    def handoff(self, x: torch.Tensor) -> torch.Tensor:
        """forward with the MLP's norm taking its sums of squares from the o projection's GEMV."""
        x, x_sumsq = linear_residual(self.o, rms_norm_linear(self.n1, self.qkv, x), x, return_sumsq=True)
        return linear_residual(self.down, rms_norm_swiglu(self.n2, self.gate_up, x, x_sumsq), x)

    def composite(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.o(self.qkv(self.n1(x)))
        return x + self.down(swiglu(self.gate_up, self.n2(x)))


def _blocks(seed: int) -> tuple[_Block, _Block]:
    """(bf16 block with random norm weights, its folded nvfp4 copy)."""
    torch.manual_seed(seed)
    block = _Block().to(DEV)
    with torch.no_grad():
        block.n1.weight.uniform_(0.5, 1.5)
        block.n2.weight.uniform_(0.5, 1.5)
    fp4 = _Block().to(DEV)
    fp4.load_state_dict(block.state_dict())
    fold_rms_norm_(fp4.n1, fp4.qkv)
    fold_rms_norm_(fp4.n2, fp4.gate_up)
    fp4 = apt_ext.quantize_(fp4.to(torch.bfloat16), fmt="nvfp4").eval()
    return block.to(torch.bfloat16).eval(), fp4


@needs_cuda_build
@pytest.mark.parametrize("m", [1, 16, 100])
@torch.inference_mode()
def test_fused_block_matches_composite(m, apt_seed):
    """The folded FP4 block through the fused kernels against the same FP4 layers run as the
    composite (separate norm and add), and against the bf16 block (the 4-bit error)."""
    block, fp4 = _blocks(apt_seed)
    x = torch.randn(m, 512, device=DEV, dtype=torch.bfloat16)
    fused, composite, handoff = fp4(x), fp4.composite(x), fp4.handoff(x)
    assert _rel(fused, composite) < 1e-2 and _rel(handoff, fused) < 1e-2
    # the layers' contribution (the residual hides the error): nvfp4's error through two layers of
    # random weights, 0.13-0.16 over 40 seeds on the CPU kernels
    assert _rel(fused - x, block(x) - x) < 0.2
    assert_cuda_graph_replay_matches_eager(fp4, x)  # (writes fresh values into x)
    assert_cuda_graph_replay_matches_eager(fp4.handoff, x)


@needs_cuda_build
@torch.inference_mode()
def test_fused_block_compiles(apt_seed):
    block, fp4 = _blocks(apt_seed)
    x = torch.randn(1, 512, device=DEV, dtype=torch.bfloat16)
    eager = fp4(x)  # builds the tiled copies (the compiled call reuses them)
    compiled = torch.compile(fp4, fullgraph=True)
    assert _rel(compiled(x), eager) < 1e-3
    handoff = torch.compile(fp4.handoff, fullgraph=True)
    assert _rel(handoff(x), fp4.handoff(x)) < 1e-3
