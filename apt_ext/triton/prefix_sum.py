"""Triton running sums over dim 1 of x [B, T, ...] (autopoietic attention's causal prefix mean,
apt_ext/model/prefix_sum.py): one pass, float32 accumulation (float64 for float64 x).

Each program owns one batch row b and BLOCK_D features and walks T in chunks of BLOCK_T rows
(backwards with ``reverse``): a chunk is scanned in registers (``tl.cumsum``) and offset by the
total of the chunks before it. The input is read once and the output written once, where the
ATen path reads and writes the tensor about four times (blocked_cumsum's two scans and its add)
in four launches. ``mean`` divides row t by t + 1: after the scan going forward (the prefix
mean), before it going backward (the prefix mean's gradient); ``init`` starts the running
total at a given [B, ...] value and ``total`` returns where it ended.

``matmul`` (16-bit x) takes each chunk's running sums as one tensor-core product instead of a
scan in registers: L @ chunk, L the [BLOCK_T, BLOCK_T] triangle of ones (lower going forward,
upper backward), accumulated in float32. The products are exact (x times 0 or 1), so the sums
are float32 sums of x's values as in the scan, in another order. Where the rows are divided
before the sum (the reverse mean), the quotient is split into a 16-bit high and low part (two
products: about 16 bits of its mantissa kept, against 8 for one bfloat16 product). The chunk
loop then looks like a GEMM's K loop, whose loads Triton's pipeliner stages ahead of their use.
The scan kept B * D / 16 programs short of bandwidth on the H100 (about 21 us a call for a 12.6
MB bfloat16 tensor read and written in the training step's profile, docs/model.md).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from apt_ext.triton.fp4_decode import INTERPRET
from apt_ext.triton.host_math import cdiv, next_power_of_2
from apt_ext.triton.launch import Launcher, on_device

# Chunk shape: the fastest of benchmarks/prefix_sum.py's six on the H100 (forward mean of
# float32 [8, T, 768]: 0.063 / 0.138 ms at T 1024 / 4096 against 0.083 / 0.177 ms for the earlier
# 64 x 32; benchmarks/results/history/prefix_sum_NVIDIA_H100_80GB_HBM3_d90bbcb.json).
BLOCK_T = 256     # rows per chunk
MAX_BLOCK_D = 16  # features per program (B * D / 16 programs: 384 for B 8, D 768)
MAX_MATMUL_BLOCK_T = 128  # the triangle of ones is BLOCK_T^2 values held in registers


@triton.jit
def _triangle_dot(ones, v, DOT_F32: tl.constexpr):
    """ones @ v with float32 accumulation: 16-bit operands on tensor cores, or float32 operands
    in IEEE arithmetic where there is no 16-bit dot (DOT_F32: the interpreter; ones is float32)."""
    if DOT_F32:
        return tl.dot(ones, v.to(tl.float32), input_precision="ieee")
    return tl.dot(ones, v)


@triton.jit
def _scan_kernel(x_ptr, out_ptr, init_ptr, total_ptr, T, D, stride_b, stride_t,
                 REVERSE: tl.constexpr, MEAN: tl.constexpr, HAS_INIT: tl.constexpr, HAS_TOTAL: tl.constexpr,
                 BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, MATMUL: tl.constexpr, DOT_F32: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    base = b * T * D  # out [B, T, D] contiguous; row t of batch b of x at b stride_b + t stride_t
    x_base = b * stride_b
    acc_type = tl.float64 if x_ptr.dtype.element_ty == tl.float64 else tl.float32
    carry = tl.zeros([BLOCK_D], dtype=acc_type)
    if HAS_INIT:
        carry += tl.load(init_ptr + b * D + cols, mask=cmask, other=0.0).to(acc_type)
    n_chunks = tl.cdiv(T, BLOCK_T)
    if MATMUL:
        r = tl.arange(0, BLOCK_T)
        if REVERSE:
            tri = r[None, :] >= r[:, None]  # out row i sums rows j >= i of the chunk
        else:
            tri = r[None, :] <= r[:, None]  # rows j <= i
        if DOT_F32:
            ones = tri.to(tl.float32)
        else:
            ones = tri.to(x_ptr.dtype.element_ty)
    for i in range(0, n_chunks):
        chunk = i
        if REVERSE:
            chunk = n_chunks - 1 - i
        rows = chunk * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = (rows < T)[:, None] & cmask[None, :]
        offs = base + rows.to(tl.int64)[:, None] * D + cols[None, :]
        x_offs = x_base + rows.to(tl.int64)[:, None] * stride_t + cols[None, :]
        if MATMUL:
            x16 = tl.load(x_ptr + x_offs, mask=mask, other=0.0)
            v = x16.to(acc_type)
            if MEAN and REVERSE:
                v = v / (rows + 1).to(acc_type)[:, None]
                hi = v.to(x16.dtype)
                lo = (v - hi.to(acc_type)).to(x16.dtype)
                s = _triangle_dot(ones, hi, DOT_F32) + _triangle_dot(ones, lo, DOT_F32) + carry[None, :]
            else:
                s = _triangle_dot(ones, x16, DOT_F32) + carry[None, :]
        else:
            v = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(acc_type)
            if MEAN and REVERSE:
                v = v / (rows + 1).to(acc_type)[:, None]
            s = tl.cumsum(v, axis=0, reverse=REVERSE) + carry[None, :]
        if MEAN and not REVERSE:
            s = s / (rows + 1).to(acc_type)[:, None]
        tl.store(out_ptr + offs, s.to(out_ptr.dtype.element_ty), mask=mask)
        carry += tl.sum(v, axis=0)
    if HAS_TOTAL:
        tl.store(total_ptr + b * D + cols, carry.to(total_ptr.dtype.element_ty), mask=cmask)


_SCAN = Launcher(_scan_kernel)


def scan(x: torch.Tensor, reverse: bool = False, mean: bool = False, init: torch.Tensor | None = None,
         with_total: bool = False, *, block_t: int = BLOCK_T, block_d: int = MAX_BLOCK_D,
         matmul: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, total) for x [B, T, ...] on a Triton device (or any device under TRITON_INTERPRET=1).

    out[:, t] = x[:, 0] + ... + x[:, t] (reverse: x[:, t] + ... + x[:, T-1]), plus ``init``
    ([B, ...], optional); with ``mean`` each row t is divided by t + 1 after the sum (forward)
    or before it (reverse). out has x's shape and dtype (contiguous); total ([B, ...], float32,
    float64 for float64 x) is the sum of all rows plus init when ``with_total``, else None.
    ``block_t`` rows per chunk and at most ``block_d`` features per program (powers of two from
    16; benchmarks/prefix_sum.py times other choices than the defaults). ``matmul`` takes each
    chunk's sums as a product with a triangle of ones (module docstring): bfloat16 / float16 x
    only, block_t at most MAX_MATMUL_BLOCK_T. x is read in place when each x[b, t] is contiguous
    (its rows at any stride, e.g. columns of a wider tensor), else from a contiguous copy.
    """
    for name, v in (("block_t", block_t), ("block_d", block_d)):
        if not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f"{name}: expected a power of two of at least 16, got {v!r}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating tensor of at least 2 dims [B, T, ...], got {got}")
    if matmul and (x.dtype not in (torch.bfloat16, torch.float16) or block_t > MAX_MATMUL_BLOCK_T):
        raise ValueError(f"matmul: needs bfloat16 or float16 x and block_t <= {MAX_MATMUL_BLOCK_T}, "
                         f"got {x.dtype} and {block_t}")
    b, t = x.shape[:2]
    if init is not None and (not isinstance(init, torch.Tensor) or init.shape != (b, *x.shape[2:])):
        got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init: expected a tensor of shape {(b, *x.shape[2:])}, got {got}")
    d = math.prod(x.shape[2:])
    # rows x[b, t] read in place where each is d contiguous elements (e.g. a column slice of a wider
    # matmul's output), else from a contiguous copy
    rows_dense = x.numel() == 0 or x[0, 0].is_contiguous()
    xc = x if rows_dense else x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = torch.empty((b, *x.shape[2:]), dtype=acc, device=x.device) if with_total else None
    if xc.numel() == 0:
        if total is not None:
            total.copy_(init if init is not None else torch.zeros_like(total))
        return out, total
    block_d = min(block_d, max(16, next_power_of_2(d)))
    init_c = init.contiguous() if init is not None else xc
    with on_device(x):
        _SCAN((b, cdiv(d, block_d)), (xc, out, init_c, total if total is not None else out, t, d, xc.stride(0),
                                      xc.stride(1)),
              dict(REVERSE=bool(reverse), MEAN=bool(mean), HAS_INIT=init is not None, HAS_TOTAL=with_total,
                   BLOCK_T=block_t, BLOCK_D=block_d, MATMUL=bool(matmul), DOT_F32=INTERPRET), num_warps=4)
    return out, total
