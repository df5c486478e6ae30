"""Split-K for the FP4 Triton kernels: how many K ranges a launch uses, and the reduction of
their float32 partials.

A kernel split SPLIT_K ways along K writes partials [SPLIT_K, M, N] (float32); :func:`reduce_splits`
adds them in split order and applies bias, GELU and the cast in one small launch: deterministic,
no zero-filled accumulator (atomics would need one, plus a cast pass), and the partials are tiny
next to the weight (SPLIT_K*M*N*4 bytes against N*K/2).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext.triton.fp4_decode import bias_gelu

_REDUCE_BLOCK = 1024
PROGRAMS_PER_SM = (8, 4, 16)  # split targets of the candidate configs, most likely first


@triton.jit
def _split_sum_kernel(part_ptr, bias_ptr, out_ptr, MN, N, splits, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                      BLOCK: tl.constexpr):
    # out [M, N] (flat, MN elements) = epilogue(sum over splits of part [splits, M, N]), in order.
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < MN
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, splits):
        acc += tl.load(part_ptr + s * MN + i, mask=ok, other=0.0)
    acc = bias_gelu(acc, bias_ptr, i % N, ok, HAS_BIAS, GELU)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=ok)


def sm_count(device: torch.device) -> int:
    """Multiprocessors of ``device`` (4 where it has none to ask: the interpreter's CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def candidate_splits(tiles: int, k_steps: int, device: torch.device) -> list[int]:
    """Distinct split counts for a grid of ``tiles`` output tiles over ``k_steps`` K steps: those
    giving about PROGRAMS_PER_SM programs per multiprocessor (at most one step each), then 1
    (no reduction launch)."""
    sms = sm_count(device)
    splits = [max(1, min(k_steps, triton.cdiv(p * sms, tiles))) for p in PROGRAMS_PER_SM] + [1]
    return list(dict.fromkeys(splits))


def steps_per_split(k_steps: int, split: int) -> tuple[int, int]:
    """(steps each split walks, splits actually launched): no split is left empty."""
    steps = triton.cdiv(k_steps, split)
    return steps, triton.cdiv(k_steps, steps)


def reduce_splits(part: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, gelu: bool) -> None:
    """out [M, N] = gelu?(sum over splits of part [splits, M, N] + bias), summed in split order."""
    splits, m, n = part.shape
    _split_sum_kernel[(triton.cdiv(m * n, _REDUCE_BLOCK),)](
        part, bias if bias is not None else out, out, m * n, n, splits, HAS_BIAS=bias is not None, GELU=gelu,
        BLOCK=_REDUCE_BLOCK, num_warps=4)
