"""Plain-PyTorch reference of the FP4 formats (docs/contract.md §3): the tests' definition of the
math. Shipped code never imports it (it lives under tests/); the format constants come from
apt_ext/fp4/format.py.

Every kernel (C++ CPU, CUDA, Triton) must produce bit-identical codes and scales to
``quantize`` here, and ``dequantize`` values within the output dtype's rounding.

Shapes: a weight ``w`` is [N, K]; ``Kp`` is K rounded up to a multiple of the block size
(zero padding); ``packed`` is uint8 [N, Kp/2] with the low nibble first; ``scales`` is
[N, Kp/block]: float8_e4m3fn (nvfp4), uint8 biased exponent e+127 (mxfp4) or float32 absmax
(nf4); ``tensor_scale`` is a float32 0-dim tensor.
"""
from __future__ import annotations

import math

import torch

from apt_ext.fp4.format import E2M1_MAX, E4M3_MAX, FORMATS, code_table

BLOCK_SIZES = {name: f.block_size for name, f in FORMATS.items()}


def pack(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., K] (K even, values 0..15) -> uint8 [..., K/2], low nibble first."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] -> uint8 codes [..., K]."""
    return torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2)


def e2m1_codes(v: torch.Tensor) -> torch.Tensor:
    """Round float32 values to E2M1 codes: nearest, ties to mantissa bit 0, saturate at 6.

    Tie points 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4 (docs/contract.md §3).
    Zero and values that round to magnitude 0 encode as code 0 (no negative zero).
    """
    m = v.abs()
    code = ((m > 0.25).to(torch.uint8) + (m >= 0.75) + (m > 1.25) + (m >= 1.75)
            + (m > 2.5) + (m >= 3.5) + (m > 5.0)).to(torch.uint8)
    neg = (v < 0) & (code > 0)
    return code + neg.to(torch.uint8) * 8


def _blocks(w: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    n, k = w.shape
    kp = math.ceil(k / block) * block
    wf = torch.zeros(n, kp, dtype=torch.float32, device=w.device)
    wf[:, :k] = w.float()
    return wf.view(n, kp // block, block), kp


def quantize(w: torch.Tensor, fmt: str = "nvfp4", block_size: int | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] float -> (packed uint8 [N, Kp/2], scales [N, Kp/block], tensor_scale float32 [])."""
    block_size = BLOCK_SIZES[fmt] if block_size is None else block_size
    blocks, kp = _blocks(w, block_size)
    bamax = blocks.abs().amax(dim=-1)                                   # [N, nb] float32
    if fmt == "nvfp4":
        amax = bamax.max()
        ts = amax / (E4M3_MAX * E2M1_MAX) if float(amax) > 0 else torch.ones((), dtype=torch.float32)
        ts = ts.to(torch.float32).reshape(())
        s = (bamax / E2M1_MAX) / ts
        scales = s.clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
        dec = scales.float() * ts
        q = blocks / dec.unsqueeze(-1)
        codes = torch.where((dec == 0).unsqueeze(-1), torch.zeros_like(q, dtype=torch.uint8), e2m1_codes(q))
    elif fmt == "mxfp4":
        ts = torch.ones((), dtype=torch.float32)
        mant, ex = torch.frexp(bamax / E2M1_MAX)                             # x = mant * 2**ex, mant in [0.5, 1)
        e = torch.where(mant == 0.5, ex - 1, ex)                         # exact ceil(log2(x))
        e = torch.where(bamax == 0, torch.full_like(e, -127), e).clamp(-127, 127)
        scales = (e + 127).to(torch.uint8)
        dec = torch.ldexp(torch.ones_like(bamax), e)
        codes = e2m1_codes(blocks / dec.unsqueeze(-1))
    else:  # nf4
        ts = torch.ones((), dtype=torch.float32)
        scales = bamax.clone()
        q = blocks / bamax.unsqueeze(-1)
        dist = (q.unsqueeze(-1) - code_table("nf4").to(q.device)).abs()   # [N, nb, block, 16]
        codes = dist.argmin(dim=-1).to(torch.uint8)                      # first minimum: ties -> lower index
        codes = torch.where((bamax == 0).unsqueeze(-1), torch.full_like(codes, FORMATS['nf4'].zero_code), codes)
    packed = pack(codes.reshape(w.shape[0], kp))
    return packed, scales, ts


def decode_scales(scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """Per-block decode scale as float32 [N, nb]."""
    if fmt == "nvfp4":
        return scales.float() * tensor_scale.float().reshape(())
    if fmt == "mxfp4":
        return torch.ldexp(torch.ones(scales.shape, dtype=torch.float32, device=scales.device),
                           scales.to(torch.int32) - 127)
    return scales.float()


def dequantize(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str,
               block_size: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> [N, Kp] of ``dtype``: code value times its block's decode scale, in float32."""
    block_size = BLOCK_SIZES[fmt] if block_size is None else block_size
    codes = unpack(packed)                                              # [N, Kp]
    n, kp = codes.shape
    vals = code_table(fmt).to(packed.device)[codes.long()].view(n, kp // block_size, block_size)
    out = vals * decode_scales(scales, tensor_scale, fmt).unsqueeze(-1)
    return out.view(n, kp).to(dtype)


def linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
           bias: torch.Tensor | None, fmt: str, block_size: int | None = None) -> torch.Tensor:
    """x [..., K] -> x @ dequantize(W)[:, :K].T + bias in float64 math, returned in x's dtype."""
    k = x.shape[-1]
    w = dequantize(packed, scales, tensor_scale, fmt, block_size, torch.float64)[:, :k]
    out = x.double() @ w.T
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


def rms_normalized(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The tiled ops' RMSNorm prologue (rms_eps): x [..., K] * rsqrt(mean(x**2, -1) + eps), in float64."""
    x = x.double()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
