"""fp4_quantize / fp4_dequantize CPU kernels: bit-exact against tests/reference/fp4.py."""
from __future__ import annotations

import pytest
import torch

import apt_ext  # noqa: F401  (registers the fake kernels)
from cpu_paths import supported_cpu_paths
from fp4_helpers import FLOAT_DTYPES, FORMATS, assert_same_quantization
from reference import fp4 as ref

SHAPES = [(1, 1), (1, 16), (3, 7), (5, 64), (17, 100), (32, 256), (9, 1000)]


def quant(w, fmt):
    return torch.ops.apt.fp4_quantize(w, fmt, ref.BLOCK_SIZES[fmt])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_random_weights_bit_exact(fmt, dtype, shape, rng):
    scale = torch.empty(()).uniform_(-6, 6, generator=rng).exp2()
    w = (torch.randn(shape, generator=rng) * scale).to(dtype)
    assert_same_quantization(quant(w, fmt), ref.quantize(w, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_heavy_tailed_and_tiny_weights(fmt, rng):
    w = torch.randn(64, 192, generator=rng) ** 3
    w[0] *= 1e-30                                     # blocks near the float32 subnormals
    w[1] *= 1e30
    w[2, ::3] = 0.0
    assert_same_quantization(quant(w, fmt), ref.quantize(w, fmt))


def test_e2m1_ties_and_saturation_exact():
    # mxfp4 block with amax 6 -> e = 0, decode scale 1: w/dec hits every tie exactly.
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0])
    expect = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0])
    row = torch.cat([ties, -ties, ties, -ties])                  # 32 = one mxfp4 block
    p, s, t = quant(row[None], "mxfp4")
    assert s.item() == 127
    got = torch.ops.apt.fp4_dequantize(p, s, t, "mxfp4", 32, torch.float32)[0]
    torch.testing.assert_close(got, torch.cat([expect, -expect, expect, -expect]), rtol=0, atol=0)
    # nvfp4: global amax 2688 -> tensor scale 1; block 2 has amax 6 (s = 1, ties exact);
    # block 3 has amax 6.36 -> s = 1.06 rounds to e4m3 1.0 -> 6.36 saturates to code 7 (6).
    w = torch.zeros(1, 48)
    w[0, 0] = 2688.0
    w[0, 16:24], w[0, 24:32] = ties, -ties
    w[0, 32], w[0, 33] = 6.36, -6.36
    got = quant(w, "nvfp4")
    assert_same_quantization(got, ref.quantize(w, "nvfp4"))
    assert got[2].item() == 1.0 and got[1][0, 1].float().item() == 1.0
    codes = ref.unpack(got[0])[0]
    assert codes[16:24].tolist() == [0, 2, 2, 4, 4, 6, 6, 7]   # values 0 1 1 2 2 4 4 6
    assert codes[32].item() == 7 and codes[33].item() == 15


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_blocks_and_negative_zero(fmt, rng):
    bs = ref.BLOCK_SIZES[fmt]
    w = torch.randn(3, 3 * bs, generator=rng)
    w[0, :bs] = 0.0                                            # an all-zero block
    w[1, bs:2 * bs] = -0.0                                     # an all-negative-zero block
    w[2, 5] = -0.0
    got = quant(w, fmt)
    assert_same_quantization(got, ref.quantize(w, fmt))
    codes = ref.unpack(got[0])
    zero = 7 if fmt == "nf4" else 0
    assert (codes[0, :bs] == zero).all() and (codes[1, bs:2 * bs] == zero).all()
    assert codes[2, 5].item() == zero
    assert got[1][0, 0].float().item() == 0.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_nf4_and_padding_codes(fmt, rng):
    bs = ref.BLOCK_SIZES[fmt]
    w = torch.randn(4, bs + 3, generator=rng)                   # K not a multiple of the block
    packed, scales, _ = quant(w, fmt)
    assert packed.shape == (4, bs) and scales.shape == (4, 2)
    pad = ref.unpack(packed)[:, bs + 3:]
    assert (pad == (7 if fmt == "nf4" else 0)).all()


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dequantize_matches_reference(isa, fmt, dtype, rng, monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    w = torch.randn(13, 200, generator=rng) * 0.1
    q = ref.quantize(w, fmt)
    got = torch.ops.apt.fp4_dequantize(*q, fmt, ref.BLOCK_SIZES[fmt], dtype)
    want = ref.dequantize(*q, fmt, dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, want)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_decodes_every_scale_byte(isa, fmt, dtype, rng, monkeypatch):
    # Every one of the 256 scale bytes (e4m3 subnormals, zero, -0, NaN; mxfp4 2^-127 and 2^128),
    # in a different order in each row, nb = 257 so the vector loops also leave a tail.
    monkeypatch.setenv("APT_FP4_CPU_ISA", isa)
    bs = ref.BLOCK_SIZES[fmt]
    scales = torch.stack([torch.cat([torch.randperm(256, generator=rng), torch.tensor([7])]) for _ in range(5)])
    scales = scales.to(torch.uint8)
    if fmt == "nvfp4":
        scales = scales.view(torch.float8_e4m3fn)
    packed = torch.randint(0, 256, (5, 257 * bs // 2), generator=rng, dtype=torch.uint8)
    ts = torch.tensor(0.375)
    got = torch.ops.apt.fp4_dequantize(packed, scales, ts, fmt, bs, dtype)
    want = ref.dequantize(packed, scales, ts, fmt, dtype=dtype)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_forcing_an_unknown_isa_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("APT_FP4_CPU_ISA", "sse9")
    q = ref.quantize(torch.randn(2, 16), "nvfp4")
    with pytest.raises(ValueError, match="APT_FP4_CPU_ISA"):
        torch.ops.apt.fp4_dequantize(*q, "nvfp4", 16, torch.float32)
