"""Triton ``apt::fp4_linear`` (and ``fp4_linear_gelu``): x [..., K] @ dequantize(W).T + bias.

One kernel, two tunings:
  * small M (M <= SMALL_M_MAX): 16-row tiles of x and split-K so that a few rows of x still
    spread the weight stream over every SM; each split writes a float32 partial sum, the
    partials are added and the epilogue (bias, GELU, cast) runs in torch.
  * large M: 64/128-row tiles, no split, bias and GELU in the kernel's epilogue.
The weight tile is decoded in registers (float32 code value times block scale, then x's dtype)
and multiplied with ``tl.dot``. Even and odd columns of x meet the low and high nibbles of each
byte in two dots, so no interleaving of the decoded tile is needed. float32 x multiplies in
IEEE float32 (not TF32). Autotuned per (N, K, M bucket) on a GPU; one fixed config under
TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext import _native
from apt_ext.triton import kernel
from apt_ext.triton.fp4_decode import FORMAT_IDS, INTERPRET, code_value, decode_scale, nf4_lut, scales_as_raw

SMALL_M_MAX = 64      # rows of x up to which the split-K tuning runs
_SPLIT_K_GRAIN = 256  # a split covers a multiple of this many K (every BLOCK_K divides it)


def _configs(small: bool) -> list[triton.Config]:
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
    if small:  # decode-bound: wide K tiles, several loads in flight
        shapes = [(64, 128, 4, 3), (128, 128, 4, 3), (64, 256, 4, 3), (128, 256, 8, 3)]
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                for bn, bk, w, s in shapes]
    shapes = [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 128, 4, 3), (128, 128, 128, 8, 4)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in shapes]


@triton.jit
def _fp4_linear_kernel(x_ptr, packed_ptr, scales_ptr, ts_ptr, lut_ptr, bias_ptr, out_ptr,
                       M, N, K, row_bytes, m_bucket, K_SPLIT: tl.constexpr,
                       FMT: tl.constexpr, BS: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                       SPLIT: tl.constexpr, DOT_F32: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # x [M, K] contiguous; packed [N, row_bytes]; out [M, N] (SPLIT == False) or float32
    # partials [splits, M, N] (SPLIT == True).
    BKH: tl.constexpr = BLOCK_K // 2
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rj = tl.arange(0, BKH)
    m_ok, n_ok = rm < M, rn < N
    nb = 2 * row_bytes // BS
    ts = tl.load(ts_ptr)
    # K_SPLIT (K elements per program) is a compile-time constant: the loop bound must not be
    # a run-time scalar under TRITON_INTERPRET=1 with numpy 2.4 (int() of a 1-element array).
    byte_lo = pid_k * (K_SPLIT // 2)
    byte_hi = byte_lo + K_SPLIT // 2
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(0, (K_SPLIT // 2 + BKH - 1) // BKH):
        j = byte_lo + it * BKH + rj
        w_mask = n_ok[:, None] & ((j < byte_hi) & (j < row_bytes))[None, :]
        w = tl.load(packed_ptr + rn[:, None] * row_bytes + j[None, :], mask=w_mask, other=0).to(tl.int32)
        raw = tl.load(scales_ptr + rn[:, None] * nb + (j // (BS // 2))[None, :], mask=w_mask, other=0)
        s = decode_scale(raw, ts, FMT)
        w_lo = code_value(w & 15, lut_ptr, FMT) * s
        w_hi = code_value(w >> 4, lut_ptr, FMT) * s
        k_even = 2 * j
        x_row = x_ptr + rm[:, None] * K
        x_even = tl.load(x_row + k_even[None, :], mask=m_ok[:, None] & (k_even < K)[None, :], other=0.0)
        x_odd = tl.load(x_row + k_even[None, :] + 1, mask=m_ok[:, None] & (k_even + 1 < K)[None, :], other=0.0)
        if DOT_F32:
            acc += tl.dot(x_even.to(tl.float32), tl.trans(w_lo), input_precision="ieee")
            acc += tl.dot(x_odd.to(tl.float32), tl.trans(w_hi), input_precision="ieee")
        else:
            ty = x_ptr.dtype.element_ty
            acc += tl.dot(x_even, tl.trans(w_lo.to(ty)))
            acc += tl.dot(x_odd, tl.trans(w_hi.to(ty)))
    mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT:
        tl.store(out_ptr + (pid_k * M + rm[:, None]) * N + rn[None, :], acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        if GELU:
            acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


_small_m = triton.autotune(configs=_configs(True), key=["N", "row_bytes", "m_bucket"])(
    _fp4_linear_kernel)
_large_m = triton.autotune(configs=_configs(False), key=["N", "row_bytes", "m_bucket"])(_fp4_linear_kernel)


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _split_k(m: int, n: int, kp: int, device: torch.device) -> int:
    """K elements per split: enough (N-tile x split) programs for ~4 per SM at 64-wide N tiles."""
    programs = triton.cdiv(m, 16) * triton.cdiv(n, 64)
    splits = max(1, min(4 * _sm_count(device) // programs, triton.cdiv(kp, 2 * _SPLIT_K_GRAIN)))
    return triton.cdiv(triton.cdiv(kp, splits), _SPLIT_K_GRAIN) * _SPLIT_K_GRAIN


def linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
           bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool = False) -> torch.Tensor:
    """x [..., K] float32/bfloat16/float16 -> [..., N] in x's dtype (fp32 accumulation);
    ``gelu`` applies the exact (erf) GELU after the bias."""
    kp = _native._C.fp4.check_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    k, n = x.shape[-1], packed.shape[0]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    out_dtype = x.dtype
    # The interpreter has no bfloat16/float16 dot: run it in float32 and round at the end.
    x2 = (x2.float() if INTERPRET else x2).contiguous()
    packed, scales = packed.contiguous(), scales_as_raw(scales.contiguous(), fmt)
    ts = tensor_scale.reshape(()).to(torch.float32)
    if m == 0 or n == 0:
        return x.new_empty((*x.shape[:-1], n))
    lut = nf4_lut(x.device)
    common = dict(FMT=FORMAT_IDS[fmt], BS=block_size, DOT_F32=x2.dtype == torch.float32)
    m_bucket = min(triton.next_power_of_2(m), 4096)
    if m <= SMALL_M_MAX:
        k_per_split = _split_k(m, n, kp, x.device)
        splits = triton.cdiv(kp, k_per_split)
        part = torch.empty((splits, m, n), dtype=torch.float32, device=x.device)
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]), splits)
        _small_m[grid](x2, packed, scales, ts, lut, part, part, m, n, k, packed.shape[1], m_bucket, K_SPLIT=k_per_split,
                       HAS_BIAS=False, GELU=False, SPLIT=True, **common)
        y = part.sum(0) if splits > 1 else part[0]
        if bias is not None:
            y = y + bias.float()
        if gelu:
            y = torch.nn.functional.gelu(y)
        return y.to(out_dtype).reshape(*x.shape[:-1], n)
    out = torch.empty((m, n), dtype=x2.dtype, device=x.device)
    bias_arg = bias.contiguous() if bias is not None else out
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]), 1)
    _large_m[grid](x2, packed, scales, ts, lut, bias_arg, out, m, n, k, packed.shape[1], m_bucket, K_SPLIT=kp,
                   HAS_BIAS=bias is not None, GELU=gelu, SPLIT=False, **common)
    return out.to(out_dtype).reshape(*x.shape[:-1], n)


@kernel("fp4_linear")
def fp4_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
               bias: torch.Tensor | None, fmt: str, block_size: int) -> torch.Tensor:
    """The ``apt::fp4_linear`` schema's Triton kernel."""
    return linear(x, packed, scales, tensor_scale, bias, fmt, block_size)


@kernel("fp4_linear_gelu")
def fp4_linear_gelu(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                    bias: torch.Tensor | None, fmt: str, block_size: int) -> torch.Tensor:
    """The ``apt::fp4_linear_gelu`` schema's Triton kernel (GELU in the epilogue)."""
    return linear(x, packed, scales, tensor_scale, bias, fmt, block_size, gelu=True)
