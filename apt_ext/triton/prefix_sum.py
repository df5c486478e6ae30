"""Triton running sum over dim 1 of x [B, T, ...] (the autopoietic prefix mean's sums,
apt_ext/model/prefix_sum.py): one pass, float32 accumulation (float64 for float64 x).

Each program owns one batch row b and BLOCK_D features and walks T in chunks of BLOCK_T rows
(backwards with ``reverse``): a chunk is scanned in registers (``tl.cumsum``) and offset by the
total of the chunks before it. The input is read once and the output written once, where the
ATen path reads and writes the tensor about four times (blocked_cumsum's two scans and its add)
in four launches.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext.triton.host_math import cdiv, next_power_of_2

BLOCK_T = 64      # rows per chunk
MAX_BLOCK_D = 32  # features per program (B * D / 32 programs: 192 for B 8, D 768)


@triton.jit
def _running_sum_kernel(x_ptr, out_ptr, T, D, REVERSE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = b * T * D
    acc_type = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    carry = tl.zeros([BLOCK_D], dtype=acc_type)
    n_chunks = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_chunks):
        chunk = i
        if REVERSE:
            chunk = n_chunks - 1 - i
        rows = chunk * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = (rows < T)[:, None] & cmask[None, :]
        offs = base + rows.to(tl.int64)[:, None] * D + cols[None, :]
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_type)
        s = tl.cumsum(v, axis=0, reverse=REVERSE) + carry[None, :]
        tl.store(out_ptr + offs, s.to(out_ptr.dtype.element_ty), mask=mask)
        carry += tl.sum(v, axis=0)


def running_sum(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """out[:, t] = x[:, 0] + ... + x[:, t] (reverse: x[:, t] + ... + x[:, T-1]).

    x: [B, T, ...] floating tensor on a Triton device (or any device under TRITON_INTERPRET=1).
    Returns a contiguous tensor of x's shape and dtype; sums accumulate in float32 (float64 for
    float64 x).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating tensor of at least 2 dims [B, T, ...], got {got}")
    b, t = x.shape[:2]
    xc = x.contiguous()
    d = xc.numel() // max(b * t, 1)
    out = torch.empty_like(xc)
    if xc.numel() == 0:
        return out
    block_d = min(MAX_BLOCK_D, max(16, next_power_of_2(d)))
    _running_sum_kernel[(b, cdiv(d, block_d))](xc, out, t, d, REVERSE=bool(reverse), BLOCK_T=BLOCK_T,
                                               BLOCK_D=block_d, num_warps=4)
    return out
