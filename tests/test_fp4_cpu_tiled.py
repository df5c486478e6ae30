"""The CPU tiled FP4 layout (apt_ext.fp4.tiled.cpu_tile, csrc/fp4/fp4_cpu_tile.cpp): the bytes are
the documented transpose of the canonical words, the scales are the canonical values exactly,
fp4_linear_cpu_tiled matches the reference on every CPU path, and FP4Linear takes it only where
its AVX-512 kernel runs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import apt_ext  # noqa: F401
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import cpu_tile, cpu_tiled_kernel_is_fast
from apt_ext.nn import FP4Linear
from apt_ext.nn import fp4_linear as fp4_linear_module
from cpu_paths import supported_cpu_paths
from fp4_helpers import FLOAT_DTYPES, FORMATS, assert_linear_close
from reference import fp4 as ref

HAS_AVX512 = "avx512" in supported_cpu_paths()


def _quantized(fmt: str, n: int, k: int, rng: torch.Generator):
    """(FP4Weight, its dequantised float32 [n, Kp]) of a random weight with rows of very different
    magnitudes (small nvfp4 block scales next to large ones)."""
    w = torch.randn(n, k, generator=rng) * torch.logspace(-3, 0, n).unsqueeze(1)
    q = quantize(w, fmt)
    return q, ref.dequantize(q.packed, q.scales, q.tensor_scale, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n,k", [(1, 1), (16, 64), (37, 100), (150, 272)])
def test_layout_is_the_documented_transpose(fmt, n, k, rng):
    q, _ = _quantized(fmt, n, k, rng)
    t = cpu_tile(q)
    kp, block, nt = q.packed.shape[1] * 2, q.block_size, -(-n // 16)
    assert t.tiles.shape == (nt, kp // 8, 64) and t.tiles.dtype == torch.uint8
    assert t.tile_scales.shape == (nt, kp // block, 16)
    assert t.tile_scales.dtype == (torch.float32 if fmt == "nf4" else torch.uint8)
    words = t.tiles.view(torch.int32)                                  # [tiles, kp / 8, 16]
    canonical = q.packed.contiguous().view(torch.int32)                # [n, kp / 8]
    for row in range(n):
        assert torch.equal(words[row // 16, :, row % 16], canonical[row])
    # The documented byte decodes, times out_scale, give the canonical scale values exactly.
    if fmt == "nf4":
        decoded = t.tile_scales
    else:
        shift, bias = (20, (127 - 9) << 23) if fmt == "nvfp4" else (23, 1 << 23)
        decoded = ((t.tile_scales.to(torch.int32) << shift) + bias).view(torch.float32)
    want = q.scales.float() if fmt != "mxfp4" else torch.ldexp(torch.ones(q.scales.shape), q.scales.to(torch.int32) - 127)
    if fmt == "nvfp4":
        want = want * q.tensor_scale
    for row in range(n):
        assert torch.equal(decoded[row // 16, :, row % 16] * t.out_scale, want[row])
    if n % 16:                                                         # rows past N are zero
        assert not words[-1, :, n % 16:].any() and not t.tile_scales[-1, :, n % 16:].any()
    assert t.out_scale.dtype == torch.float32 and t.out_scale.shape == ()
    canonical_bytes = q.packed.numel() + q.scales.numel() * q.scales.element_size()
    assert t.nbytes == t.tiles.numel() + t.tile_scales.numel() * t.tile_scales.element_size() + 4
    assert t.nbytes - 4 == canonical_bytes or n % 16                   # as many bytes as the canonical tensors


def test_scales_the_encoding_cannot_hold_are_refused_or_handled(rng):
    q, wd = _quantized("nvfp4", 20, 64, rng)
    scales = q.scales.clone()
    scales[2, 1] = 0.0                                                 # a zero scale: its codes are zeroed
    zeroed = type(q)(q.packed, scales, q.tensor_scale, q.fmt, q.block_size, q.shape)
    t = cpu_tile(zeroed)
    assert not t.tiles.view(torch.int32)[0, 2:4, 2].any()              # words 2, 3 = codes 16..31 of row 2
    x = torch.randn(2, 64, generator=rng)
    want = torch.ops.apt.fp4_linear(x, q.packed, scales, q.tensor_scale, None, "nvfp4", 16)
    torch.testing.assert_close(t.linear(x), want, rtol=1e-5, atol=1e-6)
    scales[2, 1] = -1.0
    with pytest.raises(ValueError, match="scales: an nvfp4 block scale is negative"):
        cpu_tile(type(q)(q.packed, scales, q.tensor_scale, q.fmt, q.block_size, q.shape))
    mx, _ = _quantized("mxfp4", 4, 64, rng)
    exps = mx.scales.clone()
    exps[0, 0], exps[1, 0] = 1, 200                                    # 199 binades apart
    with pytest.raises(ValueError, match="mxfp4 block exponents span 199 binades"):
        cpu_tile(type(mx)(mx.packed, exps, mx.tensor_scale, mx.fmt, mx.block_size, mx.shape))


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9])                  # groups of 4 rows and a partial one
def test_linear_matches_reference_every_path(isa, fmt, m, rng, monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    n, k = 150, 100                      # a partial last tile, three work pieces, K < Kp
    q, wd = _quantized(fmt, n, k, rng)
    t = cpu_tile(q)
    x = torch.randn(m, k, generator=rng)
    bias = torch.randn(n, generator=rng)
    y = t.linear(x, bias)
    assert_linear_close(y, ref.linear(x, q.packed, q.scales, q.tensor_scale, bias, fmt), x, wd)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("xshape", [(3, 64), (2, 2, 64), (64,)])
def test_dtypes_and_leading_dims(fmt, dtype, xshape, rng):
    q, wd = _quantized(fmt, 20, 64, rng)
    x = torch.randn(xshape, generator=rng).to(dtype)
    y = cpu_tile(q).linear(x)
    assert y.shape == (*xshape[:-1], 20) and y.dtype == dtype
    assert_linear_close(y, ref.linear(x, q.packed, q.scales, q.tensor_scale, None, fmt), x, wd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_thread_count_does_not_change_the_result(fmt, rng):
    q, _ = _quantized(fmt, 300, 256, rng)
    t, x = cpu_tile(q), torch.randn(2, 256, generator=rng)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = t.linear(x)
        torch.set_num_threads(2)
        two = t.linear(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_nan_scale_is_refused(rng):
    q, _ = _quantized("nvfp4", 20, 64, rng)
    scales = q.scales.clone()
    scales.view(torch.uint8)[3, 1] = 0x7F                              # E4M3 NaN
    with pytest.raises(ValueError, match="scales: an nvfp4 block scale is NaN"):
        cpu_tile(type(q)(q.packed, scales, q.tensor_scale, q.fmt, q.block_size, q.shape))


def test_empty_batch(rng):
    q, _ = _quantized("mxfp4", 8, 32, rng)
    assert cpu_tile(q).linear(torch.empty(0, 32)).shape == (0, 8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck(fmt, rng):
    q, _ = _quantized(fmt, 20, 100, rng)
    t = cpu_tile(q)
    x = torch.randn(3, 100, generator=rng)
    cases = [(torch.ops.apt.fp4_linear_cpu_tiled.default,
              (x, t.tiles, t.tile_scales, t.out_scale, torch.randn(20, generator=rng), fmt, 20, 100))]
    if fmt != "nvfp4":  # opcheck's schema test does arithmetic on inputs; float8 scales lack it
        cases.append((torch.ops.apt.fp4_cpu_tile.default, (q.packed, q.scales, q.tensor_scale, fmt, q.block_size)))
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_bad_input_is_refused(rng):
    q, _ = _quantized("nvfp4", 20, 100, rng)
    t = cpu_tile(q)
    x = torch.randn(2, 100, generator=rng)
    op = torch.ops.apt.fp4_linear_cpu_tiled
    with pytest.raises(ValueError, match=r"tiles: expected \[2, 14, 64\] for n = 20, k = 100"):
        op(x, t.tiles[:, :-1], t.tile_scales, t.out_scale, None, "nvfp4", 20, 100)
    with pytest.raises(ValueError, match=r"tiles: expected \[1, 14, 64\] for n = 16"):
        op(x, t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 16, 100)
    mx = cpu_tile(_quantized("mxfp4", 20, 100, rng)[0])               # nf4's Kp too, bfloat16 scales
    with pytest.raises(TypeError, match="tile_scales: expected Float for nf4"):
        op(x, mx.tiles, mx.tile_scales, mx.out_scale, None, "nf4", 20, 100)
    with pytest.raises(ValueError, match=r"x: expected \[\.\.\., 100\]"):
        op(torch.randn(2, 99), t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 20, 100)
    with pytest.raises(ValueError, match=r"bias: expected shape \[20\]"):
        op(x, t.tiles, t.tile_scales, t.out_scale, torch.zeros(19), "nvfp4", 20, 100)
    with pytest.raises(ValueError, match="n: expected a positive number"):
        op(x, t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 0, 100)
    with pytest.raises(ValueError, match="fmt"):
        op(x, t.tiles, t.tile_scales, t.out_scale, None, "fp5", 20, 100)
    with pytest.raises(ValueError, match="packed: the CPU tiled layout is made from CPU tensors"):
        torch.ops.apt.fp4_cpu_tile(q.packed.to("meta"), q.scales.to("meta"), q.tensor_scale.to("meta"), "nvfp4", 16)
    with pytest.raises(TypeError, match="weight: expected an FP4Weight"):
        cpu_tile(torch.zeros(3))


# ---- FP4Linear's path choice -----------------------------------------------------------------
@pytest.mark.parametrize("isa", supported_cpu_paths())
def test_fp4linear_takes_the_tiled_copy_only_on_the_avx512_path(isa, rng, monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    layer = FP4Linear.from_linear(nn.Linear(100, 40), fmt="nvfp4")
    x = torch.randn(3, 100, generator=rng)
    with torch.no_grad():
        y = layer(x)
    assert (layer._cpu_tiled is not None) == (isa == "avx512") == cpu_tiled_kernel_is_fast()
    want = torch.ops.apt.fp4_linear(x, layer.packed, layer.scales, layer.tensor_scale, layer.bias, "nvfp4", 16)
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with the AVX-512 FP4 path")
def test_fp4linear_keeps_the_canonical_path_where_the_copy_does_not_fit(rng, monkeypatch):
    monkeypatch.delenv("APT_FP4_CPU_ISA", raising=False)
    layer = FP4Linear.from_linear(nn.Linear(64, 24), fmt="mxfp4")
    rows = fp4_linear_module.CPU_TILED_MAX_ROWS + 1
    with torch.no_grad():
        layer(torch.randn(rows, 64, generator=rng))                   # too many rows
    layer(torch.randn(2, 64, generator=rng))                           # bias needs its gradient
    assert layer._cpu_tiled is None
    layer.cpu_tiled = False
    with torch.no_grad():
        layer(torch.randn(2, 64, generator=rng))
    assert layer._cpu_tiled is None
    layer.cpu_tiled = True
    with torch.no_grad():
        layer(torch.randn(2, 64, generator=rng))
    assert layer._cpu_tiled is not None
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    assert not any("tile" in k for k in state)                         # never saved
    layer.load_state_dict(state)
    assert layer._cpu_tiled is None                                    # rebuilt after a load
    with torch.no_grad():
        layer(torch.randn(2, 64, generator=rng))
        assert layer._cpu_tiled is not None
        layer.cpu_tiled = False                                        # switched off: the copy is let go
        x = torch.randn(2, 64, generator=rng)
        torch.testing.assert_close(layer(x), torch.ops.apt.fp4_linear(x, layer.packed, layer.scales,
                                                                      layer.tensor_scale, layer.bias, "mxfp4", 32))
        assert layer._cpu_tiled is None
        layer.cpu_tiled = True
        layer(torch.randn(2, 64, generator=rng))
    layer.to(torch.bfloat16)
    assert layer._cpu_tiled is None                                    # and after .to()


@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with the AVX-512 FP4 path")
def test_compiled_model_uses_the_copy_an_eager_call_built(rng, monkeypatch):
    monkeypatch.delenv("APT_FP4_CPU_ISA", raising=False)
    model = nn.Sequential(FP4Linear.from_linear(nn.Linear(64, 32), fmt="nf4"), nn.ReLU()).eval()
    x = torch.randn(2, 64, generator=rng)
    with torch.no_grad():
        eager = model(x)
        assert model[0]._cpu_tiled is not None
        compiled = torch.compile(model, backend="eager", fullgraph=True)(x)
    assert torch.equal(compiled, eager)


@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with the AVX-512 FP4 path")
def test_fp4linear_falls_back_when_the_layout_refuses_the_scales(rng, monkeypatch):
    monkeypatch.delenv("APT_FP4_CPU_ISA", raising=False)
    layer = FP4Linear.from_linear(nn.Linear(64, 20), fmt="nvfp4")
    layer.scales.view(torch.uint8)[3, 1] = 0x7F                        # E4M3 NaN: kept as it is
    x = torch.randn(2, 64, generator=rng)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="no tiled copy of this weight"):
        y = layer(x)
    want = torch.ops.apt.fp4_linear(x, layer.packed, layer.scales, layer.tensor_scale, layer.bias, "nvfp4", 16)
    torch.testing.assert_close(y, want, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(y[:, 3]).all()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want, rtol=0, atol=0, equal_nan=True)  # warned once, not rebuilt
    assert layer._cpu_tiled is None
