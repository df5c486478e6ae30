"""Triton ``apt::fp4_dequantize``: packed uint8 [N, Kp/2] -> [N, Kp] of float32/bfloat16/float16."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext import _native
from apt_ext.triton import kernel
from apt_ext.triton.fp4_decode import (FORMAT_IDS, INTERPRET, code_unit, decode_scale, nf4_lut, nibble_values,
                                       scales_as_raw)
from apt_ext.triton.host_math import cdiv
from apt_ext.triton.launch import Launcher

_BLOCK_N, _BLOCK_B = 16, 128  # rows and packed bytes per program (4 KiB of bf16 out)


@triton.jit
def _dequantize_kernel(packed_ptr, scales_ptr, ts_ptr, lut_ptr, out_ptr, n_rows, row_bytes, ncols, ld_out,
                       FMT: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    mask = (rn < n_rows)[:, None] & (rb < row_bytes)[None, :]
    b = tl.load(packed_ptr + rn[:, None] * row_bytes + rb[None, :], mask=mask, other=0).to(tl.int32)
    nb = 2 * row_bytes // BS
    raw = tl.load(scales_ptr + rn[:, None] * nb + (rb // (BS // 2))[None, :], mask=mask, other=0)
    s = decode_scale(raw, tl.load(ts_ptr), FMT)
    lo, hi = nibble_values(b, lut_ptr, FMT)
    lo = lo * code_unit(FMT) * s  # the unit first: a scale near float32's maximum times 2^14 would overflow
    hi = hi * code_unit(FMT) * s
    # codes 2j and 2j + 1 side by side: one contiguous store per row instead of two strided ones
    w = tl.reshape(tl.join(lo, hi), (BLOCK_N, 2 * BLOCK_B))
    col = tl.program_id(1) * 2 * BLOCK_B + tl.arange(0, 2 * BLOCK_B)
    tl.store(out_ptr + rn[:, None] * ld_out + col[None, :], w.to(out_ptr.dtype.element_ty),
             mask=(rn < n_rows)[:, None] & (col < ncols)[None, :])


def dequantize_into(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str,
                    block_size: int, out: torch.Tensor) -> None:
    """Writes the first ``out.shape[1]`` decoded columns of every row into ``out`` [N, ncols]
    (row stride free, unit column stride). Arguments must already be checked."""
    n, row_bytes = packed.shape
    grid = (cdiv(n, _BLOCK_N), cdiv(row_bytes, _BLOCK_B))
    _DEQUANTIZE(grid, (packed, scales_as_raw(scales, fmt), tensor_scale, nf4_lut(packed.device), out,
                       n, row_bytes, out.shape[1], out.stride(0)),
                dict(FMT=FORMAT_IDS[fmt], BS=block_size, BLOCK_N=_BLOCK_N, BLOCK_B=_BLOCK_B))


_DEQUANTIZE = Launcher(_dequantize_kernel)


@kernel("fp4_dequantize")
def fp4_dequantize(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str,
                   block_size: int, dtype: torch.dtype) -> torch.Tensor:
    """packed uint8 [N, Kp/2], scales [N, Kp/block_size], tensor_scale float32 -> [N, Kp] ``dtype``."""
    kp = _native._C.fp4.check_dequantize(packed, scales, tensor_scale, fmt, block_size, dtype)
    packed, scales = packed.contiguous(), scales.contiguous()
    # The interpreter has no bfloat16/float16 arithmetic: decode in float32, round with torch
    # (the same round-to-nearest-even).
    work_dtype = torch.float32 if INTERPRET else dtype
    out = torch.empty((packed.shape[0], kp), dtype=work_dtype, device=packed.device)
    if out.numel():
        dequantize_into(packed, scales, tensor_scale.reshape(()), fmt, block_size, out)
    return out.to(dtype)
