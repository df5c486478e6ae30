"""Running sum over the sequence dimension that torch.compile keeps as one ATen call.

``torch.cumsum(x, dim=1)`` on a [B, T, D] activation is a scan over a non-innermost dimension;
on CUDA, torch 2.11's inductor turns a long one into a split scan whose code generation fails
(``InductorError: TypeError: list indices must be integers or slices, not NoneType`` in
``TritonSymbols.get_block_shape``; measured on an H200 at B 8, T 1024, D 768, see
docs/model.md). Under torch.compile the sum therefore goes through the custom op
``apt_model::prefix_sum``, which the compiled graph calls as one ATen ``cumsum`` (no graph
break, no inductor scan). In eager mode it is called directly: a custom op's first eager call
imports torch._dynamo (about 2 s), which a server's first request must not pay.

On CUDA a long sum is taken in blocks (``blocked_cumsum``): ATen's scan over dim 1 gives one
thread per (batch, feature) column walking all T rows (6,144 threads for B 8 x D 768), and it was
the largest kernel in one profile of the compiled training step at T 1024 on the H200 (a run
whose JSON did not come back, so no figure is quoted). Two short scans, within blocks of 32 rows
and then over the blocks' totals, run 32 times as many columns in parallel. Whether that is
faster end to end is not settled: the next run's compiled step was not faster (docs/model.md);
benchmarks/prefix_sum.py times the two on their own.
"""
from __future__ import annotations

import torch

BLOCK_ROWS = 32  # rows per block of blocked_cumsum


def blocked_cumsum(x: torch.Tensor) -> torch.Tensor:
    """torch.cumsum(x, dim=1) as a scan within blocks of BLOCK_ROWS rows plus the running total of
    the earlier blocks (the same sums, added in another order).

    x: [B, T, ...] floating tensor. Returns a tensor of x's shape and dtype.
    """
    b, t = x.shape[:2]
    if t <= 2 * BLOCK_ROWS:
        return torch.cumsum(x, dim=1)
    blocks = -(-t // BLOCK_ROWS)
    pad = blocks * BLOCK_ROWS - t
    if pad:
        x = torch.cat([x, x.new_zeros((b, pad) + tuple(x.shape[2:]))], dim=1)
    inner = torch.cumsum(x.reshape((b, blocks, BLOCK_ROWS) + tuple(x.shape[2:])), dim=2)
    totals = inner[:, :, -1]
    before = torch.cumsum(totals, dim=1) - totals  # the sum of the blocks before each block
    return (inner + before.unsqueeze(2)).reshape((b, blocks * BLOCK_ROWS) + tuple(x.shape[2:]))[:, :t]


def _running_sum(x: torch.Tensor) -> torch.Tensor:
    return blocked_cumsum(x) if x.is_cuda else torch.cumsum(x, dim=1)


@torch.library.custom_op("apt_model::prefix_sum", mutates_args=())
def _prefix_sum_op(x: torch.Tensor) -> torch.Tensor:
    return _running_sum(x).contiguous()


@_prefix_sum_op.register_fake
def _prefix_sum_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _prefix_sum_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    # d out[:, t] / d x[:, s] = 1 for s <= t: the gradient of x[:, s] sums grad over t >= s.
    return _prefix_sum_op(grad.flip(1)).flip(1)


_prefix_sum_op.register_autograd(_prefix_sum_backward)


def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """Inclusive running sum over dim 1: out[:, t] = x[:, 0] + ... + x[:, t].

    x: [B, T, ...] floating tensor (any device). Returns a tensor of x's shape and dtype.
    """
    if x.dim() < 2:
        raise ValueError(f"x: expected a tensor of at least 2 dims [B, T, ...], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating tensor, got {x.dtype}")
    if torch.compiler.is_compiling():
        return _prefix_sum_op(x)
    return _running_sum(x)
