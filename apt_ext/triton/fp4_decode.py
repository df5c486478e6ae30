"""Triton device helpers of the FP4 kernels: code and block-scale decoding (docs/contract.md §3)
and the linear epilogue.

Decoded values are exact float32 (code value times decode scale, as in tests/reference/fp4.py).
Formats are compile-time ints, their index in apt_ext.fp4.format.FORMAT_NAMES (NVFP4=0, MXFP4=1,
NF4=2, the enum of csrc/fp4/fp4_format.h).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from apt_ext.fp4.format import FORMAT_NAMES, code_table

FORMAT_IDS = {name: i for i, name in enumerate(FORMAT_NAMES)}
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

NF4_PAIRS_OFFSET = tl.constexpr(16)  # float32 offset of nf4_lut's byte-pair table (after the 16 codes; 8-aligned)
_NF4_LUTS: dict[torch.device, torch.Tensor] = {}


def nf4_lut(device: torch.device) -> torch.Tensor:
    """float32 [16 + 512] on ``device`` (cached; the kernels gather from it): the NF4 table, then
    for every byte b the pair (table[b & 15], table[b >> 4]) (:func:`word_values` reads a byte's
    two codes with one 8-byte gather)."""
    lut = _NF4_LUTS.get(device)
    if lut is None:
        table = code_table("nf4")
        b = torch.arange(256)
        pairs = torch.stack((table[b & 15], table[b >> 4]), 1).reshape(-1)
        lut = torch.cat((table, pairs)).to(device)
        _NF4_LUTS[device] = lut
    return lut


def scales_as_raw(scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """nvfp4's float8 scales viewed as uint8 (the kernels decode E4M3 bits themselves)."""
    return scales.view(torch.uint8) if fmt == "nvfp4" else scales


@triton.jit
def decode_scale(raw, ts, FMT: tl.constexpr):
    """float32 decode scale from the stored scale (uint8 E4M3 bits, uint8 biased exponent or
    float32 absmax) and nvfp4's tensor scale ``ts``."""
    if FMT == 0:
        b = raw.to(tl.int32)
        e = (b >> 3) & 15
        m = b & 7
        normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
        mag = tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)  # subnormal: m * 2^-9
        s = tl.where((b & 128) != 0, -mag, mag)
        return s * ts
    elif FMT == 1:
        b = raw.to(tl.int32)
        return tl.where(b == 0, 1 << 22, b << 23).to(tl.float32, bitcast=True)  # 2^(b-127)
    else:
        return raw.to(tl.float32)


@triton.jit
def nibble_values(b, lut_ptr, FMT: tl.constexpr):
    """(low, high) float32 code values of packed bytes ``b`` (int32, 0..255), in units of
    :func:`code_unit`: E2M1 codes placed as float16 bit patterns (sign to bit 15, exponent and
    mantissa to bits 11..9), which read as value * 2^-14 exactly, subnormal codes included
    (five integer ops and one conversion per code); nf4 gathers from its 16-entry table (unit 1)."""
    if FMT == 2:
        return tl.load(lut_ptr + (b & 15)), tl.load(lut_ptr + (b >> 4))
    else:
        lo = ((b & 7) << 9) | ((b & 8) << 12)
        hi = ((b & 0x70) << 5) | ((b & 0x80) << 8)
        return (lo.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
                hi.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32))


@triton.jit
def _shl(v, n: tl.constexpr):
    """v << n, or v >> -n for negative n (n a compile-time constant)."""
    if n >= 0:
        return v << n
    else:
        return v >> (-n)


@triton.jit
def pair_values(w, P: tl.constexpr, lut_ptr, FMT: tl.constexpr):
    """float32 values, in units of :func:`code_unit`, of codes P and P + 4 of packed words ``w``
    (int32, 8 codes each, code i in bits 4i..4i+3). E2M1 decodes both at once as a float16 pair
    (the bit placement of :func:`nibble_values`: exponent and mantissa bits moved to 9..11 and
    25..27, sign bits to 15 and 31, two shifts and two masks); nf4 gathers from its table."""
    if FMT == 2:
        return tl.load(lut_ptr + ((w >> 4 * P) & 15)), tl.load(lut_ptr + ((w >> (16 + 4 * P)) & 15))
    else:
        t = (_shl(w, 9 - 4 * P) & 0x0E000E00) | (_shl(w, 12 - 4 * P) & -0x7FFF8000)  # 0x80008000 as int32
        return (t.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32),
                (t >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32))


@triton.jit
def _byte_pair(w, I: tl.constexpr, lut_ptr):
    """nf4 values (low nibble, high nibble) of byte I of packed words ``w`` (int32): one 8-byte
    gather from nf4_lut's pair table, split into its two float32 halves."""
    pairs = (lut_ptr + NF4_PAIRS_OFFSET).to(tl.pointer_type(tl.int64))
    v = tl.load(pairs + ((w >> 8 * I) & 255))
    return (v.to(tl.int32).to(tl.float32, bitcast=True),  # int64 -> int32 keeps the low half
            (v >> 32).to(tl.int32).to(tl.float32, bitcast=True))


@triton.jit
def word_values(w, lut_ptr, FMT: tl.constexpr):
    """float32 values, in units of :func:`code_unit`, of all 8 codes of packed words ``w`` [...]
    (int32), as [..., 2, 2, 2]: code j = 4h + 2r + q at [h, r, q], so a reshape of the last
    dims (and the words' dim before them) gives the codes in column order. Built from
    :func:`pair_values` by tl.join, which stacks registers a thread already holds; nf4 gathers
    a byte's two codes at once from :func:`nf4_lut`'s pair table (4 gathers per word, not 8)."""
    if FMT == 2:  # lo_p: code p, hi_p: code p + 4; byte i holds codes 2i (low nibble) and 2i + 1
        lo0, lo1 = _byte_pair(w, 0, lut_ptr)
        lo2, lo3 = _byte_pair(w, 1, lut_ptr)
        hi0, hi1 = _byte_pair(w, 2, lut_ptr)
        hi2, hi3 = _byte_pair(w, 3, lut_ptr)
    else:
        lo0, hi0 = pair_values(w, 0, lut_ptr, FMT)
        lo1, hi1 = pair_values(w, 1, lut_ptr, FMT)
        lo2, hi2 = pair_values(w, 2, lut_ptr, FMT)
        lo3, hi3 = pair_values(w, 3, lut_ptr, FMT)
    q0 = tl.join(tl.join(lo0, hi0), tl.join(lo2, hi2))  # codes 2r + 4h:     [..., h, r]
    q1 = tl.join(tl.join(lo1, hi1), tl.join(lo3, hi3))  # codes 1 + 2r + 4h: [..., h, r]
    return tl.join(q0, q1)


@triton.jit
def code_unit(FMT: tl.constexpr):
    """What :func:`nibble_values`' numbers are to be multiplied by: 2^14 for E2M1, 1 for nf4.
    Multiply before the block scale (a scale near float32's maximum times 2^14 would overflow)."""
    if FMT == 2:
        return 1.0
    else:
        return 16384.0


@triton.jit
def bias_gelu(acc, bias_ptr, rn, n_ok, HAS_BIAS: tl.constexpr, GELU: tl.constexpr):
    """Epilogue on float32 ``acc`` [..., BLOCK_N] (columns ``rn``): + bias, then exact (erf) GELU."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    if GELU:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    return acc
