"""Triton ``apt::fp4_linear`` and ``apt::fp4_linear_gelu``: x [..., K] @ dequantize(W).T + bias.

Checks the arguments (the native checks, the same messages as the CUDA and CPU kernels),
flattens x to [M, K] and runs one of three paths by M:
  * M <= gemv_max_m() (GEMV_DEFAULT_MAX_M, 2): apt_ext/triton/fp4_gemv.py, split-K GEMV
    streaming the packed weight;
  * up to PATH_TUNED_MIN_M - 1 rows: apt_ext/triton/fp4_gemm.py, tiled ``tl.dot`` GEMM decoding
    weight tiles in registers (tiles of 16+ rows with K split for few rows);
  * from DEQUANT_MATMUL_MIN_M rows: the weight dequantised to x's dtype by the Triton dequantise
    kernel in slabs of at most SCRATCH_MAX_BYTES, each multiplied with ``torch.mm`` (the vendor
    BLAS: cuBLAS, rocBLAS, oneMKL), bias and GELU after, as the CUDA ``fp4_linear`` does above
    its small-M kernel. With many rows the multiply dominates and the BLAS does it best; the
    weight's rounding to x's dtype (bfloat16: relative 2^-9) is this path's one extra error;
  * in between, the faster of the two for the shape, timed at the first call (:func:`path`).
``APT_TRITON_DEQUANT_MIN_M`` fixes one crossover instead (no timing). The GEMV and GEMM autotune
per (format, x dtype, M bucket, N, K) on a GPU (apt_ext/triton/autotune.py) and use one config
under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os

import torch

from apt_ext import _native
from apt_ext.triton import kernel
from apt_ext.triton.autotune import best_config
from apt_ext.triton.fp4_decode import INTERPRET, scales_as_raw
from apt_ext.triton.fp4_dequantize import dequantize_into
from apt_ext.triton.fp4_gemm import gemm
from apt_ext.triton.fp4_gemv import GEMV_MAX_M, gemv
from apt_ext.triton.host_math import next_power_of_2


# Rows of x up to which the GEMV runs. Measured on the H200 (GPU time, CUDA graphs, L2 flushed,
# nvfp4, bf16 x, best config of each family;
# benchmarks/results/fp4_triton_configs_NVIDIA_H200_round20.json): at M = 1 and 2 the GEMV beat
# the GEMM's split small-M tiles on all four shapes (M = 2: 95.1 against 143.6 us on
# 28672 x 8192, 10.1 against 16.9 on 4096 x 4096); at M = 4 they were even (143.5 against 143.7;
# 45.2 against 43.4 on 14336 x 4096), and from M = 16 the GEMM won by up to 8x (round 12b): the
# GEMV decodes every weight once per row of x, the GEMM once per 16 rows. M = 3 was timed in the
# twenty-second session (the GEMV ahead on all four shapes), but its JSON was not kept.
# APT_TRITON_GEMV_MAX_M (0..16) overrides it.
GEMV_DEFAULT_MAX_M = 2
# Rows of x from which the weight is always dequantised and multiplied by torch.mm
# (DEQUANT_MATMUL_MIN_M), and from which that path and the GEMM are timed against each other per
# shape (PATH_TUNED_MIN_M). Measured on the H200 with each path pinned
# (benchmarks/results/fp4_linear_NVIDIA_H200_triton_gemm.json / _triton_deqmm.json): at 512 and
# 1024 rows the dequantise path led on all four shapes; at 128 and 256 rows it depends on the
# shape: the tl.dot GEMM led on 14336 x 4096 and 28672 x 8192 (71.2 against 126.0 us, 222.9
# against 456.2 at 128 rows), dequantise + torch.mm on 4096 x 4096 and 4096 x 14336 (68.8
# against 80.8, 129.1 against 209.3), where N / BLOCK_N tiles leave most multiprocessors idle.
# Up to 64 rows the GEMM's split small-M tiles serve (0.67x-0.70x bf16 in GPU time at 32 and 64
# rows, benchmarks/results/fp4_linear_NVIDIA_H200_triton.json, where the dequantise path gave
# 0.28x-0.31x host-timed).
DEQUANT_MATMUL_MIN_M = 512
PATH_TUNED_MIN_M = 65
# Without timing (TRITON_INTERPRET=1, APT_TRITON_AUTOTUNE=0) the tuned range takes the GEMM below
# this many rows and the dequantise path from it (the geometric means' crossover of those runs).
UNTUNED_DEQUANT_MIN_M = 256
SCRATCH_MAX_BYTES = 512 << 20  # dequantised weight slab, as the CUDA path's kScratchMaxBytes


def _env_rows(name: str, default: int, low: int, high: int) -> int:
    """``$name`` as an integer in [low, high], or ``default`` when it is unset."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in {low}..{high}, got {raw!r}")
    return value


def gemv_max_m() -> int:
    """Rows of x up to which :func:`linear` runs the GEMV (``$APT_TRITON_GEMV_MAX_M`` in 0..16 or
    GEMV_DEFAULT_MAX_M; 0 sends every M below dequant_matmul_min_m() to the GEMM)."""
    return _env_rows("APT_TRITON_GEMV_MAX_M", GEMV_DEFAULT_MAX_M, 0, GEMV_MAX_M)


def dequant_matmul_min_m() -> int:
    """Rows of x from which :func:`linear` always dequantises and calls torch.mm
    (``$APT_TRITON_DEQUANT_MIN_M`` or DEQUANT_MATMUL_MIN_M; it must be above GEMV_MAX_M)."""
    return _env_rows("APT_TRITON_DEQUANT_MIN_M", DEQUANT_MATMUL_MIN_M, GEMV_MAX_M + 1, 1 << 62)


def path_candidates(m: int) -> list[str]:
    """The paths :func:`path` chooses from for M rows above the GEMV's, first the one taken
    without timing: ["gemm"] or ["deqmm"] where one is fixed (``$APT_TRITON_DEQUANT_MIN_M`` set,
    below PATH_TUNED_MIN_M, from DEQUANT_MATMUL_MIN_M), both in between."""
    if "APT_TRITON_DEQUANT_MIN_M" in os.environ or not PATH_TUNED_MIN_M <= m < DEQUANT_MATMUL_MIN_M:
        return ["deqmm" if m >= dequant_matmul_min_m() else "gemm"]
    return ["gemm", "deqmm"] if m < UNTUNED_DEQUANT_MIN_M else ["deqmm", "gemm"]


def path(x: torch.Tensor, args: tuple) -> str:
    """"gemm" or "deqmm" for x [M, K] (M above the GEMV's) and :func:`linear`'s weight ``args``:
    where both are candidates, the faster in GPU time for this (format, x dtype, M bucket, N, K,
    bias, GELU), timed once and cached (apt_ext.triton.autotune; the GEMM's own config is tuned
    during its first timed call). Under TRITON_INTERPRET=1 the untimed choice."""
    candidates = path_candidates(x.shape[0])
    if len(candidates) == 1 or INTERPRET:
        return candidates[0]
    packed, _, _, bias, fmt, _, gelu = args
    key = ("fp4_linear_path", x.device, fmt, x.dtype, next_power_of_2(x.shape[0]), packed.shape[0],
           x.shape[1], bias is not None, gelu)
    return best_config(key, lambda: candidates, lambda p: _run(p, x, args), x.device)


def _run(p: str, x: torch.Tensor, args: tuple) -> torch.Tensor:
    return dequant_matmul(x, *args) if p == "deqmm" else gemm(x, *args)


def dequant_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                   bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool) -> torch.Tensor:
    """x [M, K] contiguous -> [M, N] in x's dtype: weight slabs dequantised to x's dtype (float32
    under the interpreter, then rounded by torch) and multiplied with torch.mm; + bias, then GELU.
    Arguments as :func:`linear` passes them (checked; nvfp4 scales viewed as uint8)."""
    m, k = x.shape
    n = packed.shape[0]
    work = torch.float32 if INTERPRET else x.dtype
    rows = max(1, min(n, SCRATCH_MAX_BYTES // (k * work.itemsize)))
    slab = torch.empty((rows, k), dtype=work, device=x.device)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        w = slab[:r1 - r0]
        dequantize_into(packed[r0:r1], scales[r0:r1], tensor_scale, fmt, block_size, w)
        w = w.to(x.dtype)  # a no-op but under the interpreter
        # the bias goes into the matmul (cuBLASLt's bias epilogue on CUDA: one launch fewer)
        b = None if bias is None else bias[r0:r1].to(x.dtype)
        if r1 - r0 == n:
            torch.mm(x, w.t(), out=out) if b is None else torch.addmm(b, x, w.t(), out=out)
        else:
            out[:, r0:r1] = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
    return torch.nn.functional.gelu(out) if gelu else out


def linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
           bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool = False) -> torch.Tensor:
    """x [..., K] float32/bfloat16/float16, packed uint8 [N, Kp/2], scales [N, Kp/block_size],
    tensor_scale float32 [] or [1], bias [N] or None -> [..., N] in x's dtype (float32
    accumulation); ``gelu`` applies the exact (erf) GELU after the bias."""
    _native._C.fp4.check_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    k, n = x.shape[-1], packed.shape[0]
    # (each ATen call below costs an eager caller host time: 2-D x and a float32 [] tensor scale,
    # the usual case, skip the reshapes and the cast)
    x2 = (x if x.dim() == 2 else x.reshape(-1, k)).contiguous()
    m = x2.shape[0]
    if m == 0 or n == 0:
        return x.new_empty((*x.shape[:-1], n))
    ts = tensor_scale if tensor_scale.dim() == 0 and tensor_scale.dtype == torch.float32 else \
        tensor_scale.reshape(()).to(torch.float32)
    args = (packed.contiguous(), scales_as_raw(scales.contiguous(), fmt), ts,
            bias.contiguous() if bias is not None else None, fmt, block_size, gelu)
    y = gemv(x2, *args) if m <= gemv_max_m() else _run(path(x2, args), x2, args)
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], n)


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
