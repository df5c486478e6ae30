"""Triton device helpers that decode FP4 codes and block scales (docs/contract.md §3).

Values are exact float32 (code value times decode scale, as in tests/reference/fp4.py).
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

_NF4_LUTS: dict[torch.device, torch.Tensor] = {}


def nf4_lut(device: torch.device) -> torch.Tensor:
    """float32 [16] NF4 table on ``device`` (cached; the kernels gather from it)."""
    lut = _NF4_LUTS.get(device)
    if lut is None:
        lut = code_table("nf4", device)
        _NF4_LUTS[device] = lut
    return lut


def scales_as_raw(scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """nvfp4's float8 scales viewed as uint8 (the kernels decode E4M3 bits themselves)."""
    return scales.view(torch.uint8) if fmt == "nvfp4" else scales


@triton.jit
def e2m1_value(code):
    """float32 value of E2M1 codes (int32 tensor, 0..15): exact, via the float32 bit pattern."""
    mag = code & 7
    e = mag >> 1
    m = mag & 1
    normal = (((e + 126) << 23) | (m << 22)).to(tl.float32, bitcast=True)
    val = tl.where(e == 0, m.to(tl.float32) * 0.5, normal)
    return tl.where((code & 8) != 0, -val, val)


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
def code_value(code, lut_ptr, FMT: tl.constexpr):
    """float32 value of codes (int32) before scaling; NF4 gathers from its 16-entry table."""
    if FMT == 2:
        return tl.load(lut_ptr + code)
    else:
        return e2m1_value(code)
