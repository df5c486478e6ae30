"""Split-K for the FP4 Triton kernels: how many K ranges a launch uses, and the in-kernel sum of
their float32 partials.

A kernel split SPLIT_K ways along K writes partials [SPLIT_K, M, N] (float32) to a workspace and
counts its arrival per output tile; the last program to arrive at a tile adds the tile's
partials in split order and applies bias, GELU and the cast (:func:`store_tile`): one launch,
deterministic (the same order whichever program arrives last), no zero-filled accumulator (atomic
adds of the values would need one, plus a cast pass), and the partials are tiny next to the weight
(SPLIT_K*M*N*4 bytes against N*K/2). A second launch for the sum cost as much host time as the
kernel itself (benchmarks/results/fp4_triton_host_NVIDIA_H200.json: 24.5 us per Triton launch).
:func:`workspace` makes the partials and hands out the arrival counters
(apt_ext/triton/arrival_counters.py): the last split to arrive at a tile sets the tile's counter
back to zero, so the counters are zeroed once, not before every launch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext.triton.arrival_counters import arrival_counters
from apt_ext.triton.fp4_decode import INTERPRET, bias_gelu
from apt_ext.triton.host_math import cdiv

PROGRAMS_PER_SM = (8, 4, 16)  # split targets of the candidate configs, most likely first
# The last split reads the other splits' partials from L2 (".cg") on NVIDIA GPUs (a CUDA build of
# torch, asked without touching the driver at import), where the sum was tested; elsewhere (ROCm,
# XPU, the interpreter) with plain loads, ordered after the acquiring arrival count as CUTLASS's
# semaphore orders its reads (the cache modifier is NVIDIA's spelling).
_L2_LOADS = tl.constexpr(not INTERPRET and torch.version.hip is None and torch.version.cuda is not None)


@triton.jit
def store_tile(acc, part_ptr, count_ptr, bias_ptr, out_ptr, rm, rn, M, N, tile, PARTIAL: tl.constexpr,
               HAS_BIAS: tl.constexpr, GELU: tl.constexpr):
    """Store the float32 tile ``acc`` [BLOCK_M, BLOCK_N] of out [M, N] (rows ``rm``, columns ``rn``):
    gelu?(acc + bias) cast to out's dtype; or, with PARTIAL (a launch of tl.num_programs(1) splits
    along K; this program is split tl.program_id(1)), write it to the partials [splits, M, N] and
    count the arrival at ``count_ptr[tile]`` (zero before the launch): the last split to arrive
    sums the tile's partials in split order, stores the result as above and sets the counter
    back to zero for the next launch."""
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    offs = rm[:, None] * N + rn[None, :]
    if PARTIAL:
        splits = tl.num_programs(1)
        tl.store(part_ptr + tl.program_id(1) * M * N + offs, acc, mask=mask)
        tl.debug_barrier()  # every thread's partial stored before the (release) count below
        if tl.atomic_add(count_ptr + tile, 1, sem="acq_rel") == splits - 1:
            acc = tl.zeros_like(acc)
            for split in range(0, splits):  # other multiprocessors wrote these
                if _L2_LOADS:
                    acc += tl.load(part_ptr + split * M * N + offs, mask=mask, other=0.0, cache_modifier=".cg")
                else:
                    acc += tl.load(part_ptr + split * M * N + offs, mask=mask, other=0.0)
            acc = bias_gelu(acc, bias_ptr, rn[None, :], (rn < N)[None, :], HAS_BIAS, GELU)
            tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
            tl.store(count_ptr + tile, 0)  # every split of this launch has arrived
    else:
        acc = bias_gelu(acc, bias_ptr, rn[None, :], (rn < N)[None, :], HAS_BIAS, GELU)
        tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def sm_count(device: torch.device) -> int:
    """Multiprocessors of ``device`` (4 where it has none to ask: the interpreter's CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def candidate_splits(tiles: int, k_steps: int, device: torch.device) -> list[int]:
    """Distinct split counts for a grid of ``tiles`` output tiles over ``k_steps`` K steps: those
    giving about PROGRAMS_PER_SM programs per multiprocessor (at most one step each), then 1
    (no partials, nothing to sum)."""
    sms = sm_count(device)
    splits = [max(1, min(k_steps, cdiv(p * sms, tiles))) for p in PROGRAMS_PER_SM] + [1]
    return list(dict.fromkeys(splits))


def steps_per_split(k_steps: int, split: int) -> tuple[int, int]:
    """(steps each split walks, splits actually launched): no split is left empty."""
    steps = cdiv(k_steps, split)
    return steps, cdiv(k_steps, steps)


def workspace(split: int, m: int, n: int, tiles: int, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 partials [split, M, N], int32 arrival counters [>= tiles], all zero) for a launch
    split ``split`` ways on the current stream of ``out``'s device (``out`` twice when split is 1:
    the kernel then reads neither). The kernel leaves the counters at zero (:func:`store_tile`)."""
    if split == 1:
        return out, out
    partials = torch.empty((split, m, n), dtype=torch.float32, device=out.device)
    return partials, arrival_counters(tiles, out.device)
