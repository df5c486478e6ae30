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

The backward (a reverse running sum) is the total minus the forward running sum before each row
(:func:`suffix_sum`): one more forward scan plus element-wise work that a compiled graph fuses.
It used to flip the gradient around a scan, two full copies; on the H200 that backward took
most of the blocked sum's forward + backward time (0.48 ms against 0.07 ms forward,
benchmarks/results/history/prefix_sum_NVIDIA_H200_5ab8528.json). In the twenty-first session's
run of both (benchmarks/results/prefix_sum_NVIDIA_H200.json) forward + backward took 0.266 ms
with this backward against 0.279 with the flipping one at T 1024, 0.566 against 0.620 at T 4096.

Where triton is installed, a CUDA sum in either direction is one Triton pass instead
(apt_ext/triton/prefix_sum.py: each chunk of rows scanned in registers with float32
accumulation, the input read once and the output written once), and the backward is the same
pass in reverse (the op's ``reverse`` flag). The blocked sum and suffix_sum remain the path
without triton. Not yet timed on a GPU (benchmarks/prefix_sum.py's "prefix_sum" and "op" rows
take it there).
"""
from __future__ import annotations

import functools
from typing import Callable

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


@functools.lru_cache(maxsize=None)
def _triton_running_sum() -> Callable[[torch.Tensor, bool], torch.Tensor] | None:
    """apt_ext.triton.prefix_sum.running_sum, or None where triton is not installed."""
    try:
        from apt_ext.triton.prefix_sum import running_sum
    except ImportError:
        return None
    return running_sum


def _running_sum(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Running sum over dim 1 (reverse: from the end) in x's dtype. On CUDA one Triton pass
    (float32 accumulation) where triton is installed, else blocked_cumsum; elsewhere ATen's
    cumsum. The reverse sum without Triton is suffix_sum's total minus the running sum."""
    if x.is_cuda and x.numel() > 0:
        triton_sum = _triton_running_sum()
        if triton_sum is not None:
            return triton_sum(x, reverse)
    if reverse:
        return suffix_sum(x, _running_sum)
    return blocked_cumsum(x) if x.is_cuda else torch.cumsum(x, dim=1)


@torch.library.custom_op("apt_model::prefix_sum", mutates_args=())
def _prefix_sum_op(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    return _running_sum(x, reverse).contiguous()


@_prefix_sum_op.register_fake
def _prefix_sum_fake(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _check(t: torch.Tensor, name: str) -> None:
    """Raises unless ``t`` is a floating tensor of at least 2 dims [B, T, ...]."""
    if not isinstance(t, torch.Tensor) or t.dim() < 2:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a tensor of at least 2 dims [B, T, ...], got {got}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor, got {t.dtype}")


def suffix_sum(grad: torch.Tensor, running_sum: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Reverse running sum over dim 1, out[:, t] = grad[:, t] + ... + grad[:, T-1]: the gradient of
    a prefix sum. Taken as the total minus the running sum before t, so one forward scan
    (``running_sum``) and element-wise work; flipping the tensor around a scan instead copies it
    twice (the earlier backward, benchmarks/prefix_sum.py). In float32 for lower-precision
    ``grad`` (the subtraction cancels, so it needs more precision than the values).

    grad: [B, T, ...] floating tensor. Returns a tensor of grad's shape and dtype.
    """
    _check(grad, "grad")
    g = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()
    s = running_sum(g)
    return (s[:, -1:] - s + g).to(grad.dtype)


def _prefix_sum_setup(ctx, inputs, output) -> None:
    ctx.reverse = inputs[1]


def _prefix_sum_backward(ctx, grad: torch.Tensor):
    # d out[:, t] / d x[:, s] = 1 for s <= t: the gradient of x[:, s] sums grad over t >= s (the
    # reverse running sum; and the other way round for the reverse op)
    return _prefix_sum_op(grad, not ctx.reverse), None


_prefix_sum_op.register_autograd(_prefix_sum_backward, setup_context=_prefix_sum_setup)


class _EagerPrefixSum(torch.autograd.Function):
    """Eager autograd of the running sum, the backward a reverse running sum (the custom op's
    autograd, without the custom op: its first eager call imports torch._dynamo)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _running_sum(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _running_sum(grad, reverse=True)


def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """Inclusive running sum over dim 1: out[:, t] = x[:, 0] + ... + x[:, t].

    x: [B, T, ...] floating tensor (any device). Returns a tensor of x's shape and dtype.
    """
    _check(x, "x")
    if torch.compiler.is_compiling():
        return _prefix_sum_op(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _EagerPrefixSum.apply(x)
    return _running_sum(x)
