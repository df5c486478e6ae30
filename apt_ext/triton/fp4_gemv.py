"""Triton FP4 GEMV: ``x [M, K] @ dequantize(W).T`` for M <= GEMV_MAX_M rows, bound by streaming W.

Each program owns BLOCK_N output columns (rows of W) and one of SPLIT_K contiguous ranges of
K, which it walks in BLOCK_K steps. A step loads each row's packed weight as contiguous int32
words (8 codes each: 16-byte loads) and the block scales, decodes every word once into its 8
values in column order (fp4_decode.word_values: E2M1 as float16 pairs by shifts and masks, nf4
by one 8-byte gather per byte from a table of code pairs, joined in registers), multiplies them with one contiguous load of the
step's columns of each row of x in float32, sums per scale block, and only then multiplies by the
block's scale (one multiply per block and row of x, not per weight). The next step's words
and scales are loaded before the current step's math (a register prefetch: Triton's pipeliner
stages only loads that feed a tl.dot). At M = 1 the per-block sums accumulate across steps and
are reduced across threads once, after the loop. Where K divides into whole steps of every
split (EVEN_K), x is read without masks. Decoding in column order (round 19,
docs/fp4_gpu_notes.md) replaced a decode of codes p and p + 4 against eight strided loads of x
per word: 1.6x-1.9x less GPU time at M = 1 on the H200.

Split-K: with SPLIT_K > 1 each program writes its float32 partial and the last split to finish a
tile adds the partials in split order (apt_ext.triton.split_k.store_tile, with bias, GELU and
the cast); one launch either way.

The config (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages) is tuned per (device, format,
x dtype, M bucket, N, K) by apt_ext.triton.autotune; the candidate splits are 1 (no partials)
and those that give the grid about 4, 8 or 16 programs per SM at every shape. One fixed config
under TRITON_INTERPRET=1 (its split of 2 exercises the in-kernel sum whenever K spans two steps).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext.triton.autotune import best_config
from apt_ext.triton.fp4_decode import FORMAT_IDS, INTERPRET, code_unit, decode_scale, nf4_lut, word_values
from apt_ext.triton.host_math import cdiv, next_power_of_2
from apt_ext.triton.launch import Launcher
from apt_ext.triton.split_k import candidate_splits, steps_per_split, store_tile, workspace

GEMV_MAX_M = 16  # rows of x up to which fp4_linear runs this kernel
# (BLOCK_N, BLOCK_K, num_warps, num_stages): 32-256 packed bytes per thread and step; long steps
# won on the H200 (round 19, docs/fp4_gpu_notes.md). With more than one warp, each step's x
# reaches every warp through shared memory (two barriers per exchange); the one-warp programs
# need none, and won on the largest shape (28672 x 8192) at M = 1, 2 and 4 (round 20: 61.1 us
# at M = 1 against 122.8 for bf16). Eight-warp tiles of 2048-4096 columns lost everywhere in
# round 20 and are not candidates.
_BASES = [(16, 1024, 4, 4), (16, 512, 4, 4), (32, 256, 4, 3), (8, 1024, 4, 4), (16, 2048, 4, 4), (8, 2048, 4, 4),
          (32, 1024, 8, 4), (8, 1024, 1, 4), (8, 512, 1, 4)]


@triton.jit
def _load_step(words_ptr, scales_ptr, rn, n_ok, row_words, n_blocks, blk0, blk_end, NB: tl.constexpr,
               WB: tl.constexpr):
    """Packed int32 words [BLOCK_N, NB * WB] (8 codes each; a row's step is contiguous, so
    16-byte loads) and raw scales [BLOCK_N, NB] of the NB scale blocks from ``blk0`` (those at or
    past ``blk_end`` masked off)."""
    blk = blk0 + tl.arange(0, NB)
    word = blk0 * WB + tl.arange(0, NB * WB)
    w_ok = n_ok[:, None] & (word < blk_end * WB)[None, :]
    w = tl.load(words_ptr + rn[:, None] * row_words + word[None, :], mask=w_ok, other=0)
    ok = n_ok[:, None] & (blk < blk_end)[None, :]
    raw = tl.load(scales_ptr + rn[:, None] * n_blocks + blk[None, :], mask=ok, other=0)
    return w, raw


@triton.jit(do_not_specialize=["steps"])  # one compile whether a split takes 1 step or more
def _gemv_kernel(x_ptr, packed_ptr, scales_ptr, ts_ptr, lut_ptr, bias_ptr, out_ptr, part_ptr, count_ptr,
                 M, N, K, row_words, n_blocks, steps,
                 FMT: tl.constexpr, BS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, PARTIAL: tl.constexpr, HAS_BIAS: tl.constexpr,
                 GELU: tl.constexpr):
    # x [M, K] contiguous; packed [N, 4 * row_words] bytes, 4-byte aligned; scales [N, n_blocks];
    # out [M, N] in x's dtype; with PARTIAL, float32 partials [SPLIT_K, M, N] and arrival counters
    # [n tiles] (split_k.store_tile). Program (n tile, split) runs `steps` steps.
    NB: tl.constexpr = BLOCK_K // BS  # scale blocks per step
    WB: tl.constexpr = BS // 8        # int32 words (8 codes) per scale block
    words_ptr = packed_ptr.to(tl.pointer_type(tl.int32))
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    rm = tl.arange(0, BLOCK_M)
    kcol = tl.arange(0, NB)[:, None] * BS + tl.arange(0, BS)[None, :]  # a step's columns of x: [NB, BS]
    ts = tl.load(ts_ptr)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_blocks = tl.zeros((BLOCK_N, NB), dtype=tl.float32)  # M = 1: per-block sums, reduced after the loop
    # software prefetch: step + 1's words and scales are loaded before step's math
    blk_end = tl.minimum(n_blocks, (pid_k + 1) * steps * NB)  # end of this split's scale blocks
    w_next, raw_next = _load_step(words_ptr, scales_ptr, rn, n_ok, row_words, n_blocks, pid_k * steps * NB,
                                  blk_end, NB, WB)
    for step in range(0, steps):
        w, raw = w_next, raw_next
        w_next, raw_next = _load_step(words_ptr, scales_ptr, rn, n_ok, row_words, n_blocks,
                                      (pid_k * steps + step + 1) * NB, blk_end, NB, WB)
        s = decode_scale(raw, ts, FMT) * code_unit(FMT)         # [BLOCK_N, NB]
        k0 = (pid_k * steps + step) * BLOCK_K
        vals = tl.reshape(word_values(w, lut_ptr, FMT), (BLOCK_N, NB, BS))  # decoded once, column order
        for m in tl.static_range(BLOCK_M):
            # rows past M (BLOCK_M is M rounded up to a power of 2) re-read the last row; not stored
            x_row = x_ptr + tl.minimum(M - 1, m) * K + k0
            if EVEN_K:  # every step of every split lies inside x's K columns
                xk = tl.load(x_row + kcol).to(tl.float32)
            else:
                xk = tl.load(x_row + kcol, mask=k0 + kcol < K, other=0.0).to(tl.float32)
            blocks = tl.sum(vals * xk[None, :, :], axis=2) * s         # [BLOCK_N, NB]
            if BLOCK_M == 1:
                acc_blocks += blocks
            else:
                acc = tl.where(rm[:, None] == m, acc + tl.sum(blocks, axis=1)[None, :], acc)
    if BLOCK_M == 1:
        acc += tl.sum(acc_blocks, axis=1)[None, :]
    store_tile(acc, part_ptr, count_ptr, bias_ptr, out_ptr, rm, rn, M, N, pid_n, PARTIAL, HAS_BIAS, GELU)


def configs(n: int, kp: int, device: torch.device,
            extra_bases: tuple[tuple[int, int, int, int], ...] = ()) -> list[triton.Config]:
    """Candidate configs for N output columns and Kp (padded) K on ``device``: each base tile
    (the tuner's, then those of ``extra_bases`` it lacks: (BLOCK_N, BLOCK_K, num_warps,
    num_stages)) with the splits giving about 8, 4 and 16 programs per SM, and without a split
    (one launch)."""
    if INTERPRET:
        return [triton.Config({"BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 2}, num_warps=4, num_stages=1)]
    configs = []
    for bn, bk, warps, stages in dict.fromkeys([*_BASES, *extra_bases]):
        splits = candidate_splits(cdiv(n, bn), cdiv(kp, bk), device)
        configs += [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": s}, num_warps=warps, num_stages=stages)
                    for s in splits]
    return configs


def gemv(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
         bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool,
         config: triton.Config | None = None) -> torch.Tensor:
    """x [M, K] contiguous (1 <= M <= GEMV_MAX_M; float32/bfloat16/float16), packed uint8 [N, Kp/2],
    scales [N, Kp/block_size] (nvfp4's viewed as uint8), tensor_scale float32 [] -> [M, N] in x's
    dtype: gelu?(x @ W.T + bias), float32 accumulation. Arguments must already be checked.
    ``config`` (one of :func:`configs`) runs instead of the tuned one."""
    m, k = x.shape
    n, row_bytes = packed.shape
    if not 1 <= m <= GEMV_MAX_M:
        raise ValueError(f"x: the GEMV takes 1..{GEMV_MAX_M} rows, got {m}")
    if packed.data_ptr() % 4:  # the kernel reads 4-byte words (rows are multiples of 8 bytes)
        packed = packed.clone()
    block_m = next_power_of_2(m)
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    bias_arg = bias if bias is not None else out
    head = (x, packed, scales, tensor_scale, nf4_lut(x.device), bias_arg, out)

    def launch(cfg: triton.Config) -> None:
        grid, steps, constexprs = _plan(cfg, n, k, row_bytes, fmt, block_size, block_m, bias is not None, gelu)
        _GEMV(grid, (*head, *workspace(grid[1], m, n, grid[0], out), m, n, k, row_bytes // 4,
                     2 * row_bytes // block_size, steps), constexprs,
              num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    if config is None:
        key = ("fp4_gemv", x.device, fmt, x.dtype, block_m, n, k, bias is not None, gelu)
        config = best_config(key, lambda: configs(n, 2 * row_bytes, x.device), launch, x.device)
    launch(config)
    return out


_GEMV = Launcher(_gemv_kernel)
_PLANS: dict[tuple, tuple] = {}


def _plan(cfg: triton.Config, n: int, k: int, row_bytes: int, fmt: str, block_size: int, block_m: int,
          has_bias: bool, gelu: bool) -> tuple[tuple[int, int], int, dict]:
    """(grid (n tiles, splits), steps per split, constexprs) of a launch of ``cfg`` (cached: the
    arithmetic is host time of every eager call)."""
    bn, bk, split = cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"], cfg.kwargs["SPLIT_K"]
    key = (bn, bk, split, n, k, row_bytes, fmt, block_size, block_m, has_bias, gelu)
    plan = _PLANS.get(key)
    if plan is None:
        steps, split = steps_per_split(cdiv(2 * row_bytes, bk), split)
        constexprs = dict(FMT=FORMAT_IDS[fmt], BS=block_size, BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk,
                          EVEN_K=k == split * steps * bk, PARTIAL=split > 1, HAS_BIAS=has_bias, GELU=gelu)
        plan = _PLANS[key] = ((cdiv(n, bn), split), steps, constexprs)
    return plan
