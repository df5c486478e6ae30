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
def _dequantize_tile(packed_ptr, scales_ptr, ts, lut_ptr, out_ptr, n_rows, row_bytes, ncols, ld_out, pid_n, pid_b,
                     FMT: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """Rows pid_n * BLOCK_N.. and packed bytes pid_b * BLOCK_B.. of one weight (tensor scale ``ts``)."""
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    mask = (rn < n_rows)[:, None] & (rb < row_bytes)[None, :]
    b = tl.load(packed_ptr + rn[:, None] * row_bytes + rb[None, :], mask=mask, other=0).to(tl.int32)
    nb = 2 * row_bytes // BS
    raw = tl.load(scales_ptr + rn[:, None] * nb + (rb // (BS // 2))[None, :], mask=mask, other=0)
    s = decode_scale(raw, ts, FMT)
    lo, hi = nibble_values(b, lut_ptr, FMT)
    lo = lo * code_unit(FMT) * s  # the unit first: a scale near float32's maximum times 2^14 would overflow
    hi = hi * code_unit(FMT) * s
    # codes 2j and 2j + 1 side by side: one contiguous store per row instead of two strided ones
    w = tl.reshape(tl.join(lo, hi), (BLOCK_N, 2 * BLOCK_B))
    col = pid_b * 2 * BLOCK_B + tl.arange(0, 2 * BLOCK_B)
    tl.store(out_ptr + rn[:, None] * ld_out + col[None, :], w.to(out_ptr.dtype.element_ty),
             mask=(rn < n_rows)[:, None] & (col < ncols)[None, :])


@triton.jit
def _dequantize_kernel(packed_ptr, scales_ptr, ts_ptr, lut_ptr, out_ptr, n_rows, row_bytes, ncols, ld_out,
                       FMT: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    _dequantize_tile(packed_ptr, scales_ptr, tl.load(ts_ptr), lut_ptr, out_ptr, n_rows, row_bytes, ncols, ld_out,
                     tl.program_id(0), tl.program_id(1), FMT, BS, BLOCK_N, BLOCK_B)


@triton.jit
def _dequantize_many_kernel(table_ptr, program_job_ptr, lut_ptr, FMT: tl.constexpr, BS: tl.constexpr,
                            OUT_KIND: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr):
    """One program per tile of one job. ``program_job[pid]`` names the job; its row of ``table``
    (int64, 9 columns): the addresses of packed, scales, tensor_scale and out, then N, packed bytes
    per row, ncols, out's row stride and the job's first program."""
    pid = tl.program_id(0)
    row = table_ptr + tl.load(program_job_ptr + pid).to(tl.int64) * 9
    packed_ptr = tl.load(row).to(tl.pointer_type(tl.uint8))
    if FMT == 2:
        scales_ptr = tl.load(row + 1).to(tl.pointer_type(tl.float32))
    else:
        scales_ptr = tl.load(row + 1).to(tl.pointer_type(tl.uint8))
    ts = tl.load(tl.load(row + 2).to(tl.pointer_type(tl.float32)))
    if OUT_KIND == 0:
        out_ptr = tl.load(row + 3).to(tl.pointer_type(tl.bfloat16))
    elif OUT_KIND == 1:
        out_ptr = tl.load(row + 3).to(tl.pointer_type(tl.float16))
    else:
        out_ptr = tl.load(row + 3).to(tl.pointer_type(tl.float32))
    n_rows = tl.load(row + 4)
    row_bytes = tl.load(row + 5)
    local = pid - tl.load(row + 8)
    blocks_b = (row_bytes + BLOCK_B - 1) // BLOCK_B
    _dequantize_tile(packed_ptr, scales_ptr, ts, lut_ptr, out_ptr, n_rows, row_bytes, tl.load(row + 6),
                     tl.load(row + 7), local // blocks_b, local % blocks_b, FMT, BS, BLOCK_N, BLOCK_B)


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
_DEQUANTIZE_MANY = Launcher(_dequantize_many_kernel)
_OUT_KINDS = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
# One job = (packed uint8 [N, Kp/2], scales, tensor_scale, fmt, block_size, out [N, ncols])
Job = tuple[torch.Tensor, torch.Tensor, torch.Tensor, str, int, torch.Tensor]


class DequantizeMany:
    """Several weights dequantised into their ``out`` tensors by one launch per (format, block
    size, out dtype), as ``dequantize_into`` does each: the launches read a table of the jobs' addresses
    and sizes, built here once (a host-to-device copy: not while a CUDA graph captures). The
    jobs' tensors are kept, so the addresses stay valid; ``data_ptrs`` are the addresses the
    table holds (a caller whose tensors may be replaced compares them with its own). Arguments
    must already be checked: packed uint8 [N, Kp/2], out [N, ncols] with unit column stride,
    ncols <= Kp, all on one CUDA device (or the CPU under the interpreter)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = list(jobs)
        self.data_ptrs = [tuple(t.data_ptr() for t in (p, s, ts, out)) for p, s, ts, _, _, out in self.jobs]
        by_format: dict[tuple[str, int, torch.dtype], list[Job]] = {}
        for job in self.jobs:
            by_format.setdefault((job[3], job[4], job[5].dtype), []).append(job)
        self._launches = []
        for (fmt, bs, dtype), group in by_format.items():
            rows, program_job = [], []
            for i, (packed, scales, ts, _, _, out) in enumerate(group):
                n, row_bytes = packed.shape
                programs = cdiv(n, _BLOCK_N) * cdiv(row_bytes, _BLOCK_B)
                rows.append([packed.data_ptr(), scales_as_raw(scales, fmt).data_ptr(), ts.data_ptr(),
                             out.data_ptr(), n, row_bytes, out.shape[1], out.stride(0), len(program_job)])
                program_job += [i] * programs
            device = group[0][0].device
            self._launches.append((len(program_job), torch.tensor(rows, dtype=torch.int64).to(device),
                                   torch.tensor(program_job, dtype=torch.int32).to(device), nf4_lut(device),
                                   dict(FMT=FORMAT_IDS[fmt], BS=bs, OUT_KIND=_OUT_KINDS[dtype], BLOCK_N=_BLOCK_N,
                                        BLOCK_B=_BLOCK_B)))

    def run(self) -> None:
        """Launches the dequantisations on the current stream."""
        for programs, table, program_job, lut, constexprs in self._launches:
            if programs:
                _DEQUANTIZE_MANY((programs,), (table, program_job, lut), constexprs)


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
