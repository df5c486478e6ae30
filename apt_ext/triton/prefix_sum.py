"""Triton running sums over dim 1 of x [B, T, ...] (autopoietic attention's causal prefix mean,
apt_ext/model/prefix_sum.py): one pass, float32 accumulation (float64 for float64 x).

Each program owns one batch row b and BLOCK_D features and walks T in chunks of BLOCK_T rows
(backwards with ``reverse``): a chunk is scanned in registers (``tl.cumsum``) and offset by the
total of the chunks before it. The input is read once and the output written once, where the
ATen path reads and writes the tensor about four times (blocked_cumsum's two scans and its add)
in four launches. ``mean`` divides row t by t + 1: after the scan going forward (the prefix
mean), before it going backward (the prefix mean's gradient); ``init`` starts the running
total at a given [B, ...] value and ``total`` returns where it ended.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from apt_ext.triton.host_math import cdiv, next_power_of_2

# Chunk shape: the fastest of benchmarks/prefix_sum.py's six on the H100 (forward mean of
# float32 [8, T, 768]: 0.063 / 0.138 ms at T 1024 / 4096 against 0.083 / 0.177 ms for the earlier
# 64 x 32; benchmarks/results/history/prefix_sum_NVIDIA_H100_80GB_HBM3_d90bbcb.json).
BLOCK_T = 256     # rows per chunk
MAX_BLOCK_D = 16  # features per program (B * D / 16 programs: 384 for B 8, D 768)


@triton.jit
def _scan_kernel(x_ptr, out_ptr, init_ptr, total_ptr, T, D, REVERSE: tl.constexpr, MEAN: tl.constexpr,
                 HAS_INIT: tl.constexpr, HAS_TOTAL: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = b * T * D
    acc_type = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    carry = tl.zeros([BLOCK_D], dtype=acc_type)
    if HAS_INIT:
        carry += tl.load(init_ptr + b * D + cols, mask=cmask, other=0.0).to(acc_type)
    n_chunks = tl.cdiv(T, BLOCK_T)
    for i in range(0, n_chunks):
        chunk = i
        if REVERSE:
            chunk = n_chunks - 1 - i
        rows = chunk * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = (rows < T)[:, None] & cmask[None, :]
        offs = base + rows.to(tl.int64)[:, None] * D + cols[None, :]
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_type)
        if MEAN and REVERSE:
            v = v / (rows + 1).to(acc_type)[:, None]
        s = tl.cumsum(v, axis=0, reverse=REVERSE) + carry[None, :]
        if MEAN and not REVERSE:
            s = s / (rows + 1).to(acc_type)[:, None]
        tl.store(out_ptr + offs, s.to(out_ptr.dtype.element_ty), mask=mask)
        carry += tl.sum(v, axis=0)
    if HAS_TOTAL:
        tl.store(total_ptr + b * D + cols, carry.to(total_ptr.dtype.element_ty), mask=cmask)


def scan(x: torch.Tensor, reverse: bool = False, mean: bool = False, init: torch.Tensor | None = None,
         with_total: bool = False, *, block_t: int = BLOCK_T,
         block_d: int = MAX_BLOCK_D) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, total) for x [B, T, ...] on a Triton device (or any device under TRITON_INTERPRET=1).

    out[:, t] = x[:, 0] + ... + x[:, t] (reverse: x[:, t] + ... + x[:, T-1]), plus ``init``
    ([B, ...], optional); with ``mean`` each row t is divided by t + 1 after the sum (forward)
    or before it (reverse). out has x's shape and dtype (contiguous); total ([B, ...], float32,
    float64 for float64 x) is the sum of all rows plus init when ``with_total``, else None.
    ``block_t`` rows per chunk and at most ``block_d`` features per program (powers of two from
    16; benchmarks/prefix_sum.py times other choices than the defaults).
    """
    for name, v in (("block_t", block_t), ("block_d", block_d)):
        if not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f"{name}: expected a power of two of at least 16, got {v!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating tensor of at least 2 dims [B, T, ...], got {got}")
    b, t = x.shape[:2]
    if init is not None and (not isinstance(init, torch.Tensor) or init.shape != (b, *x.shape[2:])):
        got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init: expected a tensor of shape {(b, *x.shape[2:])}, got {got}")
    xc = x.contiguous()
    d = math.prod(x.shape[2:])
    out = torch.empty_like(xc)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = torch.empty((b, *x.shape[2:]), dtype=acc, device=x.device) if with_total else None
    if xc.numel() == 0:
        if total is not None:
            total.copy_(init if init is not None else torch.zeros_like(total))
        return out, total
    block_d = min(block_d, max(16, next_power_of_2(d)))
    init_c = init.contiguous() if init is not None else xc
    _scan_kernel[(b, cdiv(d, block_d))](xc, out, init_c, total if total is not None else out, t, d,
                                        REVERSE=bool(reverse), MEAN=bool(mean), HAS_INIT=init is not None,
                                        HAS_TOTAL=with_total, BLOCK_T=block_t, BLOCK_D=block_d, num_warps=4)
    return out, total
