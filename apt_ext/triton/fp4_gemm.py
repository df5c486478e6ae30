"""Triton FP4 GEMM: ``x [M, K] @ dequantize(W).T`` for M > GEMV_MAX_M, on tensor cores.

Each program computes a BLOCK_M x BLOCK_N tile of the output (programs grouped GROUP_M tiles
along M so that neighbours share weight tiles in L2). Per BLOCK_K step it loads x's
[BLOCK_M, BLOCK_K] tile as is and W's [BLOCK_N, BLOCK_K/2] packed bytes, decodes both nibbles
in registers (fp4_decode.nibble_values, times the block scales loaded as a [BLOCK_N,
BLOCK_K/BS] tile and broadcast), interleaves them back into K order (tl.join + reshape: the
pair of a byte is already in one thread) and feeds the tile, rounded to x's dtype, to
``tl.dot`` with float32 accumulation; bias and GELU run in the epilogue. float32 x: the dot
runs as three TF32 products (``input_precision="tf32x3"``, about float32's accuracy on tensor
cores) on NVIDIA GPUs and in IEEE float32 elsewhere (an IEEE dot of these tiles spills on sm_90);
under TRITON_INTERPRET=1 every dot runs in float32 (the interpreter has no 16-bit dot).
Few rows of x (M bucket <= 64): tiles of 16, 32 or 64 rows (tl.dot's smallest M is 16), and
K split SPLIT_K ways (apt_ext.triton.split_k) so that a small grid still fills the GPU; each
weight tile is decoded once per BLOCK_M rows of x, where the GEMV (apt_ext.triton.fp4_gemv)
decodes it once per row.
The config is tuned per (device, format, x dtype, M bucket, N, K) from a small Hopper-oriented
set (apt_ext.triton.autotune); one fixed config under TRITON_INTERPRET=1 (its split of 2 runs the
in-kernel sum of apt_ext.triton.split_k whenever K spans two steps).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext.triton.autotune import best_config
from apt_ext.triton.fp4_decode import FORMAT_IDS, INTERPRET, code_unit, decode_scale, nf4_lut, nibble_values
from apt_ext.triton.host_math import cdiv, next_power_of_2
from apt_ext.triton.launch import Launcher
from apt_ext.triton.split_k import candidate_splits, steps_per_split, store_tile, workspace

_GROUP_M = 8
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), no split of K
_CONFIGS = [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (64, 128, 128, 4, 4), (128, 128, 128, 8, 3),
            (64, 256, 64, 8, 4), (64, 128, 64, 4, 3)]
SMALL_M_MAX = 64  # M buckets up to this take the small-M tiles below, with K split
# (BLOCK_N, BLOCK_K, num_warps, num_stages) of the small-M tiles; BLOCK_M is the M bucket (>= 16)
_SMALL_M_BASES = [(64, 128, 4, 4), (128, 128, 4, 3), (64, 256, 4, 3), (128, 256, 8, 3)]


@triton.jit(do_not_specialize=["steps"])
def _gemm_kernel(x_ptr, packed_ptr, scales_ptr, ts_ptr, lut_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
                 M, N, K, row_bytes, n_blocks, steps,
                 FMT: tl.constexpr, BS: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                 DOT_F32: tl.constexpr, F32_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, PARTIAL: tl.constexpr):
    # x [M, K] contiguous; packed [N, row_bytes]; scales [N, n_blocks]; out [M, N] in x's dtype;
    # with PARTIAL, float32 partials [SPLIT_K, M, N] and arrival counters [tiles]
    # (split_k.store_tile). Program (tile, split) runs `steps` steps.
    BKH: tl.constexpr = BLOCK_K // 2
    NBK: tl.constexpr = BLOCK_K // BS  # scale blocks per step (every config's BLOCK_K is a multiple of BS)
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % rows
    pid_n = (pid % (GROUP_M * tiles_n)) // rows
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = rm < M, rn < N
    rj = tl.arange(0, BKH)
    rk = tl.arange(0, BLOCK_K)
    rb = tl.arange(0, NBK)
    ts = tl.load(ts_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(pid_k * steps, tl.minimum((pid_k + 1) * steps, tl.cdiv(row_bytes, BKH))):
        j = step * BKH + rj
        w_mask = n_ok[:, None] & (j < row_bytes)[None, :]
        b = tl.load(packed_ptr + rn[:, None] * row_bytes + j[None, :], mask=w_mask, other=0).to(tl.int32)
        blk = step * NBK + rb
        raw = tl.load(scales_ptr + rn[:, None] * n_blocks + blk[None, :], mask=n_ok[:, None] & (blk < n_blocks)[None, :],
                      other=0)
        s = decode_scale(raw, ts, FMT) * code_unit(FMT)                             # [BLOCK_N, NBK]
        s = tl.reshape(tl.broadcast_to(s[:, :, None], (BLOCK_N, NBK, BS // 2)), (BLOCK_N, BKH))
        lo, hi = nibble_values(b, lut_ptr, FMT)
        w = tl.reshape(tl.join(lo * s, hi * s), (BLOCK_N, BLOCK_K))
        kk = step * BLOCK_K + rk
        xt = tl.load(x_ptr + rm[:, None] * K + kk[None, :], mask=m_ok[:, None] & (kk < K)[None, :], other=0.0)
        if DOT_F32:
            acc += tl.dot(xt.to(tl.float32), tl.trans(w), input_precision=F32_DOT)
        else:
            acc += tl.dot(xt, tl.trans(w.to(xt.dtype)))
    store_tile(acc, part_ptr, count_ptr, bias_ptr, out_ptr, rm, rn, M, N, pid, PARTIAL, HAS_BIAS, GELU)


def _f32_dot(device: torch.device) -> str:
    """tl.dot precision for float32 x: three TF32 products (about float32's accuracy, on tensor
    cores) on NVIDIA GPUs; IEEE float32 elsewhere (ROCm, XPU, the interpreter)."""
    return "tf32x3" if device.type == "cuda" and torch.version.hip is None and not INTERPRET else "ieee"


def _stages(fmt: str, bm: int, bn: int, bk: int, stages: int) -> int:
    """num_stages for a tile: nf4's table lookups are loads that feed the dot, so Triton's pipeliner
    stages them in shared memory too (two float32 [BLOCK_N, BLOCK_K/2] tiles per stage); its
    largest small-M tile (64 x 128 x 256, 3 stages) asked 247,808 bytes where the H200 has 232,448,
    so nf4 tiles of that size or larger keep 2 stages."""
    return min(stages, 2) if fmt == "nf4" and bm * bn * bk >= 64 * 128 * 256 else stages


def configs(m_bucket: int, n: int, kp: int, device: torch.device, fmt: str = "nvfp4") -> list[triton.Config]:
    """Candidate configs for an M bucket (next power of 2 of M), N output columns, Kp (padded) K
    and format on ``device``; one under TRITON_INTERPRET=1."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 2}, num_warps=4, num_stages=1)]
    if m_bucket > SMALL_M_MAX:
        return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1}, num_warps=w,
                              num_stages=_stages(fmt, bm, bn, bk, s))
                for bm, bn, bk, w, s in _CONFIGS]
    bm = max(16, m_bucket)
    out = []
    for bn, bk, w, s in _SMALL_M_BASES:
        out += [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split}, num_warps=w,
                              num_stages=_stages(fmt, bm, bn, bk, s))
                for split in candidate_splits(cdiv(m_bucket, bm) * cdiv(n, bn), cdiv(kp, bk),
                                              device)]
    return out


def gemm(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
         bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool,
         config: triton.Config | None = None) -> torch.Tensor:
    """x [M, K] contiguous (float32/bfloat16/float16), packed uint8 [N, Kp/2], scales
    [N, Kp/block_size] (nvfp4's viewed as uint8), tensor_scale float32 [] -> [M, N] in x's dtype:
    gelu?(x @ W.T + bias), float32 accumulation. Arguments must already be checked.
    ``config`` (one of :func:`configs`) runs instead of the tuned one."""
    m, k = x.shape
    n, row_bytes = packed.shape
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    bias_arg = bias if bias is not None else out
    head = (x, packed, scales, tensor_scale, nf4_lut(x.device), bias_arg, out)
    m_bucket = min(next_power_of_2(m), 4096)

    def launch(cfg: triton.Config) -> None:
        block_m, steps, split, constexprs = _plan(cfg, n, row_bytes, fmt, block_size, x.dtype, x.device,
                                                  bias is not None, gelu)
        tiles = cdiv(m, block_m) * cdiv(n, constexprs["BLOCK_N"])
        _GEMM((tiles, split), (*head, *workspace(split, m, n, tiles, out), m, n, k, row_bytes,
                               2 * row_bytes // block_size, steps), constexprs,
              num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    if config is None:
        key = ("fp4_gemm", x.device, fmt, x.dtype, m_bucket, n, k, bias is not None, gelu)
        config = best_config(key, lambda: configs(m_bucket, n, 2 * row_bytes, x.device, fmt), launch, x.device)
    launch(config)
    return out


_GEMM = Launcher(_gemm_kernel)
_PLANS: dict[tuple, tuple] = {}


def _plan(cfg: triton.Config, n: int, row_bytes: int, fmt: str, block_size: int, dtype: torch.dtype,
          device: torch.device, has_bias: bool, gelu: bool) -> tuple[int, int, int, dict]:
    """(BLOCK_M, steps per split, splits, constexprs) of a launch of ``cfg`` (cached: the
    arithmetic is host time of every eager call)."""
    bm, bn, bk, split = (cfg.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K"))
    key = (bm, bn, bk, split, n, row_bytes, fmt, block_size, dtype, device, has_bias, gelu)
    plan = _PLANS.get(key)
    if plan is None:
        steps, split = steps_per_split(cdiv(row_bytes, bk // 2), split)
        constexprs = dict(FMT=FORMAT_IDS[fmt], BS=block_size, HAS_BIAS=has_bias, GELU=gelu,
                          DOT_F32=INTERPRET or dtype == torch.float32, F32_DOT=_f32_dot(device), BLOCK_M=bm,
                          BLOCK_N=bn, BLOCK_K=bk, GROUP_M=_GROUP_M, PARTIAL=split > 1)
        plan = _PLANS[key] = (bm, steps, split, constexprs)
    return plan
