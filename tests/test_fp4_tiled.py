"""The tiled FP4 layout (apt_ext.fp4.tiled, csrc/fp4/fp4_tile.cpp) on the CPU: fp4_untile(fp4_tile(w))
gives back fp4_dequantize's values bit for bit, fp4_linear_tiled's CPU kernel matches the
reference, bad input is refused. The CUDA kernel that reads the layout is tested in
tests/gpu/test_fp4_gemv_cuda.py."""
from __future__ import annotations

import pytest
import torch

import apt_ext  # noqa: F401
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import swiglu_rows, tile
from apt_ext.nn import FP4Linear, swiglu
from reference import fp4 as ref

FORMATS = ("nvfp4", "mxfp4", "nf4")


def _weight(n: int, k: int, apt_seed: int) -> torch.Tensor:
    """Rows of very different magnitudes (E4M3 subnormal block scales), an all-zero row and a
    block of exact E2M1 tie points."""
    g = torch.Generator().manual_seed(apt_seed)
    w = torch.randn(n, k, generator=g) * torch.logspace(-6, 1, n).unsqueeze(1)
    w[0] = 0.0
    if n > 2 and k >= 8:
        w[1, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -6.0])
        w[2, 3] = 1e4
    return w


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 1), (17, 200), (40, 129), (33, 4192)])
def test_untile_equals_dequantize(fmt, shape, apt_seed):
    q = quantize(_weight(*shape, apt_seed), fmt)
    t = tile(q)
    n, k = shape
    assert t.tiles.shape == (-(-n // 16), -(-k // 128), 1024) and t.tiles.dtype == torch.uint8
    assert torch.equal(t.dequantize(), q.dequantize(torch.float32))


def _kernel_view(t, fmt: str) -> torch.Tensor:
    """float64 [tiles * 16, steps * 128]: each weight decoded the way csrc/fp4/fp4_gemv_kernel_cuda.h
    reads it, written from csrc/fp4/fp4_tiled_layout.h's description alone (not from fp4_untile): lane
    L = 4g + t's word j at byte 512 (j >> 2) + 16 L + 4 (j & 3) holds pairs p = h + 2q of rows
    g + 8h at columns 32 (j >> 1) + 8t + 4 (j & 1) + 2q + {0, 1}; the scales of chunk j >> 1 are
    in entry scale_entry(fmt, L)."""
    nt, steps = t.tiles.shape[:2]
    words = t.tiles.view(torch.int32).reshape(nt, steps, 256).to(torch.int64) & 0xFFFFFFFF
    sc = t.tile_scales.to(torch.float64) if fmt == "nf4" else t.tile_scales.to(torch.int64)
    e2m1 = ref.code_table("nvfp4").to(torch.float64)
    nf4 = ref.code_table("nf4").to(torch.float64)
    out = torch.zeros(nt * 16, steps * 128, dtype=torch.float64)
    mag_rot = [0, 3, 6, 9]
    sign_rot = [4, 3, 6, 5]
    for lane in range(32):
        g, tt = lane >> 2, lane & 3
        entry = lane >> 1 if fmt == "nvfp4" else lane >> 2
        for j in range(8):
            w = words[:, :, (j >> 2) * 128 + lane * 4 + (j & 3)]  # [nt, steps]
            c = j >> 1
            for p in range(4):
                h, q = p & 1, p >> 1
                for e in range(2):
                    if fmt == "nf4":
                        code = (w >> (4 * (2 * p + e))) & 15
                        val = nf4[code] * sc[:, :, entry, 2 * h + (c >> 1)]
                    else:
                        code = torch.zeros_like(w)
                        for b in range(4):
                            target = (15 if b == 3 else 6 + b) + 16 * e
                            rot = sign_rot[p] if b == 3 else mag_rot[p]
                            code |= ((w >> ((target - rot) % 32)) & 1) << b
                        byte = sc[:, :, entry, 4 * h + c].to(torch.float64)
                        if fmt == "nvfp4":
                            scale = torch.ldexp(1 + (byte.long() & 7) / 8, (byte.long() >> 3) - 9) * 2.0 ** (118 - 126)
                        else:
                            scale = torch.ldexp(torch.ones_like(byte), byte.long() - 126)
                        val = e2m1[code] * scale * float(t.out_scale)
                    rows = torch.arange(nt) * 16 + g + 8 * h
                    cols = torch.arange(steps) * 128 + 32 * c + 8 * tt + 4 * (j & 1) + 2 * q + e
                    out[rows[:, None], cols[None, :]] = val
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_documented_layout_is_what_tile_writes(fmt, apt_seed):
    """The kernel's reading of the bytes (as documented) gives fp4_dequantize's values."""
    n, k = 40, 300
    q = quantize(_weight(n, k, apt_seed), fmt)
    got = _kernel_view(tile(q), fmt)[:n, :k]
    # float64 products here, float32 ones in fp4_dequantize: equal to float32 rounding
    torch.testing.assert_close(got, q.dequantize(torch.float32).double(), rtol=2e-7, atol=0)


def test_nvfp4_zero_scale_block_with_nonzero_codes(apt_seed):
    """A block whose scale is 0 contributes 0 whatever its codes (code * 0)."""
    q = quantize(_weight(4, 64, apt_seed), "nvfp4")
    scales = q.scales.clone()
    scales.view(torch.uint8)[1, 2] = 0
    q0 = type(q)(q.packed, scales, q.tensor_scale, q.fmt, q.block_size, q.shape)
    assert torch.equal(tile(q0).dequantize(), q0.dequantize(torch.float32))


def test_tile_refuses_what_the_layout_cannot_hold(apt_seed):
    q = quantize(_weight(4, 64, apt_seed), "nvfp4")
    bad = q.scales.clone()
    bad.view(torch.uint8)[0, 0] = 0x7F  # E4M3 NaN
    with pytest.raises(ValueError, match="scales"):
        tile(type(q)(q.packed, bad, q.tensor_scale, q.fmt, q.block_size, q.shape))
    m = quantize(_weight(4, 64, apt_seed) + 1.0, "mxfp4")
    wide = m.scales.clone()
    wide[0, 0], wide[1, 0] = 1, 250  # exponents -126 and 123 in blocks with nonzero codes
    with pytest.raises(ValueError, match="binades"):
        tile(type(m)(m.packed, wide, m.tensor_scale, m.fmt, m.block_size, m.shape))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_linear_tiled_cpu_matches_reference(fmt, dt, apt_seed):
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(_weight(37, 200, apt_seed), fmt)
    x = torch.randn(5, 200, generator=g).to(dt)
    bias = torch.randn(37, generator=g)
    y = tile(q).linear(x, bias)
    want = ref.linear(x, q.packed, q.scales, q.tensor_scale, bias, fmt, q.block_size)
    assert y.dtype == dt and y.shape == (5, 37)
    tol = 1e-5 if dt == torch.float32 else 1e-2
    assert float((y.double() - want.double()).norm() / want.double().norm()) < tol
    yg = tile(q).linear(x, bias, gelu=True)
    assert float((yg.double() - torch.nn.functional.gelu(want.double())).norm()
                 / torch.nn.functional.gelu(want.double()).norm()) < tol


def test_linear_tiled_rejects_bad_input(apt_seed):
    t = tile(quantize(_weight(20, 100, apt_seed), "nvfp4"))
    with pytest.raises(ValueError, match="x"):
        t.linear(torch.randn(2, 99))
    with pytest.raises(ValueError, match="bias"):
        t.linear(torch.randn(2, 100), torch.randn(19))
    with pytest.raises(TypeError, match="x"):
        t.linear(torch.ones(2, 100, dtype=torch.int32))
    with pytest.raises(ValueError, match="k"):
        torch.ops.apt.fp4_linear_tiled(torch.randn(2, 300), t.tiles, t.tile_scales, t.out_scale, None, "nvfp4",
                                       20, 300, False)
    with pytest.raises(ValueError, match="n"):
        torch.ops.apt.fp4_untile(t.tiles, t.tile_scales, t.out_scale, "nvfp4", 40, 100)
    with pytest.raises(TypeError, match="tile_scales"):
        torch.ops.apt.fp4_untile(t.tiles, t.tile_scales.float(), t.out_scale, "nvfp4", 20, 100)
    with pytest.raises(ValueError, match="fmt"):
        torch.ops.apt.fp4_untile(t.tiles, t.tile_scales, t.out_scale, "fp5", 20, 100)
    with pytest.raises(TypeError, match="weight"):
        tile(torch.zeros(3))


def test_swiglu_rows_pair_each_gate_with_its_up():
    """Each 16-row tile of the SwiGLU order holds gate rows 8t .. 8t + 7 and then up rows F + 8t ..;
    every weight row once."""
    rows = swiglu_rows(64)  # F = 32
    assert sorted(rows.tolist()) == list(range(64))
    assert rows[16:32].tolist() == [*range(8, 16), *range(40, 48)]
    assert torch.equal(rows[swiglu_rows(64, inverse=True)], torch.arange(64))  # inverse: where each row went
    for bad in (0, 8, 40, -16):
        with pytest.raises(ValueError, match="n: .*multiple of 16"):
            swiglu_rows(bad)
    for bad in (16.0, "16", True):  # 16.0 gave float "indices"
        with pytest.raises(TypeError, match="n: expected an int"):
            swiglu_rows(bad)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_swiglu_tiled_cpu_matches_reference(fmt, dt, apt_seed):
    """fp4_linear_tiled_swiglu's CPU kernel (tile(weight, swiglu=True)) against silu(gate) * up of the
    reference linear; the SwiGLU copy keeps the weight and its plain linear equals the plain copy's."""
    g = torch.Generator().manual_seed(apt_seed)
    q = quantize(_weight(48, 200, apt_seed), fmt)
    x = torch.randn(5, 200, generator=g).to(dt)
    bias = torch.randn(48, generator=g)
    t = tile(q, swiglu=True)
    assert t.swiglu and torch.equal(t.to_weight().packed, q.packed)
    assert torch.equal(t.dequantize(), tile(q).dequantize())
    y = t.swiglu_linear(x, bias)
    gate, up = ref.linear(x, q.packed, q.scales, q.tensor_scale, bias, fmt, q.block_size).double().chunk(2, -1)
    want = torch.nn.functional.silu(gate) * up
    assert y.dtype == dt and y.shape == (5, 24)
    tol = 1e-5 if dt == torch.float32 else 1e-2
    assert float((y.double() - want).norm() / want.norm()) < tol
    assert torch.equal(t.linear(x, bias), tile(q).linear(x, bias))


def test_swiglu_tiled_rejects_bad_input(apt_seed):
    q = quantize(_weight(40, 64, apt_seed), "nvfp4")
    plain = tile(q)
    with pytest.raises(ValueError, match="n: .*multiple of 16"):
        torch.ops.apt.fp4_linear_tiled_swiglu(torch.randn(2, 64), plain.tiles, plain.tile_scales, plain.out_scale,
                                              None, "nvfp4", 40, 64)
    with pytest.raises(ValueError, match="weight: 40 rows"):
        tile(q, swiglu=True)
    with pytest.raises(ValueError, match="not in the SwiGLU order"):
        plain.swiglu_linear(torch.randn(1, 64))
    t = tile(quantize(_weight(32, 64, apt_seed), "nvfp4"), swiglu=True)
    with pytest.raises(ValueError, match="bias"):
        t.swiglu_linear(torch.randn(2, 64), torch.randn(16))
    with pytest.raises(ValueError, match="x"):
        t.swiglu_linear(torch.randn(2, 63))
    with pytest.raises(TypeError, match="swiglu: expected a bool"):
        tile(q, swiglu="yes")


def test_swiglu_copy_linear_checks_bias_and_residual(apt_seed):
    """The SwiGLU-order copy's plain linear gathers the bias and adds the residual itself: it refuses
    what the op refuses for the plain copy (a bias of 2N values was cut to N, a residual broadcast
    or promoted to float64)."""
    q = quantize(_weight(32, 64, apt_seed), "nvfp4")
    t, plain = tile(q, swiglu=True), tile(q)
    x, bias, res = torch.randn(2, 64), torch.randn(32), torch.randn(2, 32)
    assert torch.equal(t.linear(x, bias, residual=res), plain.linear(x, bias, residual=res))
    for bad in (torch.randn(64), torch.randn(2, 16), [0.0] * 32):
        with pytest.raises(ValueError, match=r"bias: expected shape \[32\]"):
            t.linear(x, bad)
    for bad in (torch.randn(32), torch.randn(2, 2, 32), res.double(), 1.0):
        with pytest.raises(ValueError, match=r"residual: expected shape \[2, 32\] of x's dtype"):
            t.linear(x, residual=bad)


def test_fp4linear_swiglu_on_cpu_is_the_composite(apt_seed):
    """FP4Linear.swiglu off the CUDA tiled path: silu and product of the layer's two halves;
    apt_ext.nn.swiglu does the same for any module; bad widths are refused."""
    torch.manual_seed(apt_seed)
    layer = FP4Linear.from_linear(torch.nn.Linear(64, 48), fmt="nvfp4")
    x = torch.randn(3, 64)
    gate, up = layer(x).chunk(2, -1)
    want = torch.nn.functional.silu(gate) * up
    assert torch.equal(layer.swiglu(x), want) and torch.equal(swiglu(layer, x), want)
    lin = torch.nn.Linear(64, 48)
    g2, u2 = lin(x).chunk(2, -1)
    assert torch.equal(swiglu(lin, x), torch.nn.functional.silu(g2) * u2)
    with pytest.raises(ValueError, match="x"):
        layer.swiglu(torch.randn(3, 63))
    with pytest.raises(ValueError, match="even"):
        FP4Linear.from_linear(torch.nn.Linear(64, 33), fmt="nvfp4").swiglu(x)
    with pytest.raises(TypeError, match="gate_up"):
        swiglu(lambda t: t, x)
    for bad in (torch.nn.Linear(64, 33), torch.nn.LSTM(64, 32)):  # an odd width, a tuple out
        with pytest.raises(ValueError, match=r"gate_up: expected an output \[\.\.\., 2F\]"):
            swiglu(bad, x)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 1), (17, 200), (40, 129), (33, 4192)])
def test_untile_packed_gives_the_canonical_tensors_back(fmt, shape, apt_seed):
    """fp4_untile_packed(fp4_tile(q)) is q bit for bit (zero rows, E4M3 subnormal scales and tie
    points included), so the tiled copy alone can stand in for the canonical tensors."""
    q = quantize(_weight(*shape, apt_seed), fmt)
    w = tile(q).to_weight()
    assert (w.fmt, w.block_size, w.shape) == (q.fmt, q.block_size, q.shape)
    assert torch.equal(w.packed, q.packed)
    assert w.scales.dtype == q.scales.dtype and w.scales.shape == q.scales.shape
    as_bits = (lambda t: t.view(torch.uint8)) if fmt == "nvfp4" else (lambda t: t)
    assert torch.equal(as_bits(w.scales), as_bits(q.scales))
    assert w.tensor_scale.dtype == torch.float32 and torch.equal(w.tensor_scale.reshape(()), q.tensor_scale.reshape(()))


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_untile_packed_keeps_the_values_where_the_layout_forgets_bits(fmt, apt_seed):
    """A block stored with scale 0 but nonzero codes (nvfp4: fp4_tile zeroes them) and a block of
    zero codes with a nonzero exponent (mxfp4: fp4_tile clamps it): the same values come back,
    in the canonical encoding (scale 0, codes 0)."""
    q = quantize(_weight(20, 100, apt_seed), fmt)
    packed, scales = q.packed.clone(), q.scales.clone()
    r = 17  # a row of ordinary magnitude (_weight's first rows are tiny next to its outlier)
    lo, hi = (8, 16) if fmt == "nvfp4" else (16, 32)  # the packed bytes of row r's block 1
    assert int(packed[r, lo:hi].bitwise_and(0x77).sum()) > 0 and float(scales[r, 1].float()) != 0.0
    if fmt == "nvfp4":
        scales[r, 1] = 0.0
    else:
        packed[r, lo:hi] = 0
    odd = type(q)(packed, scales, q.tensor_scale, q.fmt, q.block_size, q.shape)
    w = tile(odd).to_weight()
    assert torch.equal(w.dequantize(), odd.dequantize())
    assert float(w.scales[r, 1].float()) == 0.0 and int(w.packed[r, lo:hi].sum()) == 0
    unchanged = torch.ones_like(w.packed, dtype=torch.bool)
    unchanged[r] = False
    assert torch.equal(w.packed[unchanged], q.packed[unchanged])


def test_untile_packed_rejects_bad_input(apt_seed):
    t = tile(quantize(_weight(20, 100, apt_seed), "mxfp4"))
    with pytest.raises(ValueError, match="n"):
        torch.ops.apt.fp4_untile_packed(t.tiles, t.tile_scales, t.out_scale, "mxfp4", 40, 100)
    with pytest.raises(ValueError, match="k"):
        torch.ops.apt.fp4_untile_packed(t.tiles, t.tile_scales, t.out_scale, "mxfp4", 20, 300)
    with pytest.raises(TypeError, match="tile_scales"):
        torch.ops.apt.fp4_untile_packed(t.tiles, t.tile_scales.float(), t.out_scale, "mxfp4", 20, 100)


@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck_tiled_ops(fmt, apt_seed):
    q = quantize(_weight(20, 100, apt_seed), fmt)
    t = tile(q)
    x = torch.randn(3, 100, generator=torch.Generator().manual_seed(apt_seed))
    cases = [
        (torch.ops.apt.fp4_untile.default, (t.tiles, t.tile_scales, t.out_scale, fmt, 20, 100)),
        (torch.ops.apt.fp4_untile_packed.default, (t.tiles, t.tile_scales, t.out_scale, fmt, 20, 100)),
        (torch.ops.apt.fp4_linear_tiled.default, (x, t.tiles, t.tile_scales, t.out_scale, None, fmt, 20, 100, False)),
    ]
    s = tile(quantize(_weight(32, 100, apt_seed), fmt), swiglu=True)
    cases.append((torch.ops.apt.fp4_linear_tiled_swiglu.default,
                  (x, s.tiles, s.tile_scales, s.out_scale, torch.randn(32), fmt, 32, 100)))
    if fmt != "nvfp4":  # opcheck's schema test does arithmetic on inputs; float8 scales lack it
        cases.append((torch.ops.apt.fp4_tile.default, (q.packed, q.scales, q.tensor_scale, fmt, q.block_size)))
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("fmt,k,wrong", [("mxfp4", 64, (33, 48, 63, 65)),            # inside the last 32-block
                                          ("nvfp4", 4096, (4081, 4088, 4095, 4097))])  # inside the last 16-block
def test_fp4linear_rejects_wrong_width(fmt, k, wrong):
    """The op only sees the padded K; the module knows in_features and refuses every other
    width, also those inside the last quantisation block (which nn.Linear refuses too)."""
    layer = FP4Linear.from_linear(torch.nn.Linear(k, 8), fmt=fmt)
    for width in wrong:
        with pytest.raises(ValueError, match=rf"x: expected \[\.\.\., {k}\] \(in_features\), got .*{width}"):
            layer(torch.randn(2, width))
    assert layer(torch.randn(2, k)).shape == (2, 8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_release_canonical_keeps_one_copy_and_everything_working(fmt, apt_seed):
    """release_canonical(): the packed codes and scales buffers go (the tiled copy holds the weight);
    forward (the fallback path here, on the CPU: rebuilt per call, with one warning), state_dict,
    load_state_dict, .to() and restore_canonical() all see the same weight, bit for bit."""
    g = torch.Generator().manual_seed(apt_seed)
    lin = torch.nn.Linear(100, 40)
    with torch.no_grad():
        lin.weight.copy_(_weight(40, 100, apt_seed))
    ref_layer = FP4Linear.from_linear(lin, fmt=fmt)
    layer = FP4Linear.from_linear(lin, fmt=fmt)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(3, 100, generator=g)
    layer.release_canonical()
    assert layer.canonical_released and layer.packed.numel() == 0 and layer.scales.numel() == 0
    layer.release_canonical()  # a no-op
    with pytest.warns(RuntimeWarning, match="release_canonical"):
        y = layer(x)
    assert torch.equal(y, ref_layer(x))
    state = layer.state_dict()
    assert state.keys() == before.keys()
    for k, v in before.items():
        got = state[k]
        assert got.dtype == v.dtype and torch.equal(got.view(torch.uint8) if got.dtype == torch.float8_e4m3fn
                                                    else got, v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn
                                                    else v), k
    assert layer.canonical_released  # state_dict rebuilt the tensors without keeping them
    fresh = FP4Linear(100, 40, fmt=fmt)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), y)
    layer.load_state_dict(before)  # into a released layer: its buffers come back first
    assert not layer.canonical_released and torch.equal(layer.packed, before["packed"])
    layer.release_canonical()
    layer.cpu()  # .to() / .cpu() restore the buffers before the copy goes
    assert not layer.canonical_released and torch.equal(layer.packed, before["packed"])
    layer.release_canonical()
    layer.restore_canonical()
    assert not layer.canonical_released and torch.equal(layer.packed, before["packed"])
    assert layer._tiled is not None  # restore keeps the copy
    layer.release_canonical()
    layer.tiled = False  # switching the copy off must not lose the weight
    assert torch.equal(layer(x), ref_layer(x))
    assert not layer.canonical_released and torch.equal(layer.packed, before["packed"])


def test_release_canonical_refuses_paged_layers():
    layer = FP4Linear(64, 32)
    layer._apt_paged = True
    with pytest.raises(ValueError, match="offload"):
        layer.release_canonical()
    assert not layer.canonical_released and layer.packed.numel() > 0
    del layer._apt_paged
    layer.tiled = False
    with pytest.raises(ValueError, match="tiled is False"):
        layer.release_canonical()
    assert not layer.canonical_released
