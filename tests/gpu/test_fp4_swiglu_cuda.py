"""The tiled op's SwiGLU epilogue on CUDA (``torch.ops.apt.fp4_linear_tiled_swiglu``, a copy made by
``tile(weight, swiglu=True)``) and ``FP4Linear.swiglu``, against the reference: silu(gate) * up of
the reference linear's [gate; up] output."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import apt_ext  # noqa: F401
from apt_ext import _native
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import tile
from apt_ext.nn import FP4Linear, swiglu
from fp4_helpers import assert_cuda_graph_replay_matches_eager
from reference import fp4 as ref

pytestmark = pytest.mark.skipif(not _native.build_info().get("cuda"),
                                reason="apt_ext was built without its CUDA kernels (no nvcc)")
DEV = "cuda"


def _rel_err(y: torch.Tensor, r: torch.Tensor) -> float:
    return float((y.double().cpu() - r.double().cpu()).norm() / r.double().cpu().norm().clamp_min(1e-30))


def _want(x: torch.Tensor, q, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(gate) * up of the reference linear (float64) on the CPU."""
    h = ref.linear(x.cpu().double(), q.packed.cpu(), q.scales.cpu(), q.tensor_scale.cpu(),
                   None if bias is None else bias.cpu().double(), q.fmt, q.block_size)
    gate, up = h.chunk(2, -1)
    return F.silu(gate) * up


def _tol(fmt: str, dt: torch.dtype) -> float:
    """The GEMV's tolerances (tests/gpu/test_fp4_gemv_cuda.py) with room for the float32 SiLU;
    nf4's levels are rounded to bfloat16 in the kernel (up to 2^-9 of each weight), which one row
    of 40 outputs showed at 0.0064 (M = 1, float16 and float32 x)."""
    if dt == torch.bfloat16 or fmt == "nf4":
        return 1e-2
    return 2e-3 if dt == torch.float16 else 1e-4


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
@pytest.mark.parametrize("m", [1, 3, 8, 16, 17, 40])
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("with_bias", [False, True])
def test_swiglu_op_matches_reference(fmt, m, dt, with_bias, apt_seed):
    """n = 2 x 40 rows (5 tiles: gate and up features 8 at a time), K = 200 (two steps, the last
    partial), every x dtype, with and without a bias in [gate; up] order."""
    g = torch.Generator().manual_seed(apt_seed)
    f, k = 40, 200
    q = quantize((torch.randn(2 * f, k, generator=g) * 0.3).to(DEV), fmt)
    x = torch.randn(m, k, generator=g).to(DEV, dt)
    bias = torch.randn(2 * f, generator=g).to(DEV) if with_bias else None
    t = tile(q, swiglu=True)
    y = t.swiglu_linear(x, bias)
    torch.cuda.synchronize()
    assert y.shape == (m, f) and y.dtype == dt and bool(torch.isfinite(y).all())
    err = _rel_err(y, _want(x, q, bias))
    assert err < _tol(fmt, dt), f"relative error {err:.3g} (fmt={fmt}, M={m}, dtype={dt})"


def test_swiglu_copy_keeps_the_weight(apt_seed):
    """A copy in the SwiGLU order gives back the same weight (bit for bit), dequantises to the same
    values and its plain linear (bias gathered into its row order, output gathered back) equals
    the plain copy's."""
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(torch.randn(96, 300, generator=g).to(DEV), "nvfp4")
    plain, sw = tile(q), tile(q, swiglu=True)
    back = sw.to_weight()
    assert torch.equal(back.packed, q.packed) and torch.equal(back.scales.view(torch.uint8), q.scales.view(torch.uint8))
    assert torch.equal(sw.dequantize(), plain.dequantize())
    x = torch.randn(5, 300, generator=g).to(DEV, torch.bfloat16)
    bias = torch.randn(96, generator=g).to(DEV)
    assert torch.equal(sw.linear(x, bias), plain.linear(x, bias))


@pytest.mark.parametrize("gemm", ["1,1", "1,1,-1,2,64,2,2"])
def test_swiglu_op_on_the_gemm_route(gemm, monkeypatch, apt_seed):
    """Rows the GEMM takes (APT_FP4_GEMM forcing it; the second config the wgmma form, on Hopper
    builds): the GEMM's output pairs, then the SwiGLU, against the reference."""
    if gemm != "1,1" and not torch.cuda.get_device_capability() == (9, 0):
        pytest.skip("the wgmma GEMM needs a compute capability 9.0 GPU")
    monkeypatch.setenv("APT_FP4_GEMM", gemm)
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize((torch.randn(2 * 160, 4192, generator=g) * 0.1).to(DEV), "nvfp4")
    bias = torch.randn(2 * 160, generator=g).to(DEV)
    t = tile(q, swiglu=True)
    for m in (17, 64, 129):
        x = torch.randn(m, 4192, generator=g).to(DEV, torch.bfloat16)
        try:
            y = t.swiglu_linear(x, bias)
        except RuntimeError as e:  # a wgmma config this build does not have (an sm_90 build without 90a)
            pytest.skip(f"APT_FP4_GEMM={gemm}: {e}")
        assert y.shape == (m, 160)
        assert _rel_err(y, _want(x, q, bias)) < 1e-2


def test_swiglu_rejects_what_it_cannot_take():
    q = quantize(torch.randn(40, 64).to(DEV), "nvfp4")
    with pytest.raises(ValueError, match="n: .*multiple of 16"):
        torch.ops.apt.fp4_linear_tiled_swiglu(torch.randn(2, 64, device=DEV), *_plain(q), None, "nvfp4", 40, 64)
    with pytest.raises(ValueError, match="weight: 40 rows"):
        tile(q, swiglu=True)
    with pytest.raises(ValueError, match="not in the SwiGLU order"):
        tile(quantize(torch.randn(32, 64).to(DEV), "nvfp4")).swiglu_linear(torch.randn(1, 64, device=DEV))


def _plain(q):
    t = tile(q)
    return t.tiles, t.tile_scales, t.out_scale


def test_swiglu_op_opcheck(apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(torch.randn(64, 256, generator=g).to(DEV), "nvfp4")
    t = tile(q, swiglu=True)
    x = torch.randn(3, 256, generator=g).to(DEV, torch.bfloat16)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_swiglu.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 64, 256))


def test_fp4linear_swiglu(apt_seed):
    """FP4Linear.swiglu: the fused kernel on the tiled path equals the composite of the layer's own
    output; the copy switches to the SwiGLU order once and forward still gives the same output;
    with only the copy kept (release_canonical) both still work and state_dict is unchanged;
    apt_ext.nn.swiglu takes the same path; a CUDA graph replays it."""
    torch.manual_seed(apt_seed)
    layer = FP4Linear.from_linear(torch.nn.Linear(512, 2 * 192).to(DEV, torch.bfloat16), fmt="nvfp4")
    packed = layer.packed.clone()
    x = torch.randn(4, 512, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        y_plain = layer(x)
        gate, up = y_plain.float().chunk(2, -1)
        want = F.silu(gate) * up
        assert not layer._tiled.swiglu
        y = layer.swiglu(x)
        assert layer._tiled.swiglu and y.shape == (4, 192)
        assert _rel_err(y, want) < 1e-2
        assert torch.equal(layer(x), y_plain)
        layer.release_canonical()
        assert torch.equal(layer.swiglu(x), y) and torch.equal(swiglu(layer, x), y)
        assert torch.equal(layer.state_dict()["packed"], packed)
    assert_cuda_graph_replay_matches_eager(_SwiGLU(layer), x)


class _SwiGLU(torch.nn.Module):
    def __init__(self, layer: FP4Linear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.swiglu(x)
