"""Running sum and causal mean over the sequence dimension, kept opaque to torch.compile.

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
without triton. benchmarks/prefix_sum.py times them side by side (docs/model.md has the figures).

:func:`prefix_mean` is the training step's whole prefix mean (no padding mask, no carried state)
as one op, ``apt_model::prefix_mean``: the same pass divides each row by its count and writes
the mean in x's dtype (no float32 copy of x, no float32 sums between kernels), and its backward
is one reverse pass; for 16-bit x both passes take the pass's tensor-core form (``_MATMUL_PASS``,
measured faster both ways).
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
def _triton_scan() -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None:
    """apt_ext.triton.prefix_sum.scan, or None where triton is not installed."""
    try:
        from apt_ext.triton.prefix_sum import scan
    except ImportError:
        return None
    return scan


def _triton_scan_for(x: torch.Tensor) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None:
    """The Triton pass for a non-empty CUDA tensor where triton is installed, else None."""
    return _triton_scan() if x.is_cuda and x.numel() > 0 else None


def _running_sum(x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Running sum over dim 1 (reverse: from the end) in x's dtype. On CUDA one Triton pass
    (float32 accumulation) where triton is installed, else blocked_cumsum; elsewhere ATen's
    cumsum. The reverse sum without Triton is suffix_sum's total minus the running sum."""
    triton_scan = _triton_scan_for(x)
    if triton_scan is not None:
        return triton_scan(x, reverse)[0]
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


class _EagerRunningSum(torch.autograd.Function):
    """Eager autograd of the running sum in either direction, the backward the sum in the other
    direction (so also twice differentiable; the custom op's autograd without the custom op,
    whose first eager call imports torch._dynamo)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        ctx.reverse = reverse
        return _running_sum(x, reverse)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _EagerRunningSum.apply(grad, not ctx.reverse), None


def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """Inclusive running sum over dim 1: out[:, t] = x[:, 0] + ... + x[:, t].

    x: [B, T, ...] floating tensor (any device). Returns a tensor of x's shape and dtype.
    """
    _check(x, "x")
    if torch.compiler.is_compiling():
        return _prefix_sum_op(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _EagerRunningSum.apply(x, False)
    return _running_sum(x)


# ---- the prefix mean of the training step (no padding mask, no carried state) in one op ----


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _counts(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t + 1 for each row t of x [B, T, ...], shaped to broadcast against x."""
    t = x.shape[1]
    return torch.arange(1, t + 1, device=x.device, dtype=dtype).view(1, t, *([1] * (x.dim() - 2)))


# The prefix mean's pass for 16-bit x: each chunk's sums as a tensor-core product with a triangle
# of ones (apt_ext/triton/prefix_sum.py, scan(matmul=True)) in chunks of 128 rows x 16 features.
# Graph-timed on the H100 at B 8, D 768, bf16 (benchmarks/results/prefix_sum_NVIDIA_H100_80GB_HBM3.json,
# thirtieth session): the fastest of six chunk shapes both ways, forward 17.9 / 58.8 us and backward
# 20.0 / 67.1 us at T 1024 / 4096 against the scan's 18.5 / 65.2 and 30.6 / 116.5 us.
_MATMUL_PASS = dict(matmul=True, block_t=128, block_d=16)


def _pass_options(x: torch.Tensor) -> dict:
    """scan's options for the prefix mean's pass over x: the matmul form for 16-bit x."""
    return _MATMUL_PASS if x.dtype in (torch.bfloat16, torch.float16) else {}


def _prefix_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, total): m[:, t] = (x[:, 0] + ... + x[:, t]) / (t + 1) in x's dtype, total the sum of
    all rows ([B, ...], float32; float64 for float64 x). One Triton pass on CUDA."""
    triton_scan = _triton_scan_for(x)
    if triton_scan is not None:
        return triton_scan(x, mean=True, with_total=True, **_pass_options(x))
    acc = _acc_dtype(x)
    csum = _running_sum(x.to(acc))
    total = csum[:, -1].clone() if x.shape[1] > 0 else x.new_zeros((x.shape[0], *x.shape[2:]), dtype=acc)
    return (csum / _counts(x, acc)).to(x.dtype), total


def _prefix_mean_grad(grad_m: torch.Tensor, grad_total: torch.Tensor) -> torch.Tensor:
    """The prefix mean's gradient: g[:, s] = sum over t >= s of grad_m[:, t] / (t + 1), plus
    grad_total; in grad_m's dtype. One Triton pass on CUDA."""
    triton_scan = _triton_scan_for(grad_m)
    if triton_scan is not None:
        return triton_scan(grad_m, reverse=True, mean=True, init=grad_total, **_pass_options(grad_m))[0]
    acc = _acc_dtype(grad_m)
    g = _running_sum(grad_m.to(acc) / _counts(grad_m, acc), reverse=True)
    return (g + grad_total.to(acc).unsqueeze(1)).to(grad_m.dtype)


@torch.library.custom_op("apt_model::prefix_mean", mutates_args=())
def _prefix_mean_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, total = _prefix_mean(x)
    return m.contiguous(), total.contiguous()


@_prefix_mean_op.register_fake
def _prefix_mean_fake(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0], *x.shape[2:]), dtype=_acc_dtype(x)))


@torch.library.custom_op("apt_model::prefix_mean_backward", mutates_args=())
def _prefix_mean_backward_op(grad_m: torch.Tensor, grad_total: torch.Tensor) -> torch.Tensor:
    return _prefix_mean_grad(grad_m, grad_total).contiguous()


@_prefix_mean_backward_op.register_fake
def _prefix_mean_backward_fake(grad_m: torch.Tensor, grad_total: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(grad_m, memory_format=torch.contiguous_format)


def _prefix_mean_op_setup(ctx, inputs, output) -> None:
    ctx.out_meta = [(o.shape, o.dtype, o.device) for o in output]


def _prefix_mean_op_backward(ctx, grad_m, grad_total):
    # an output that took no part in the loss has no gradient: zeros of its shape
    grad_m, grad_total = (g if g is not None else torch.zeros(shape, dtype=dtype, device=device)
                          for g, (shape, dtype, device) in zip((grad_m, grad_total), ctx.out_meta))
    return _prefix_mean_backward_op(grad_m, grad_total)


def _prefix_mean_backward_op_backward(ctx, grad):
    # the backward is the forward's adjoint, so its own gradient is the forward again
    return _prefix_mean_op(grad)


_prefix_mean_op.register_autograd(_prefix_mean_op_backward, setup_context=_prefix_mean_op_setup)
_prefix_mean_backward_op.register_autograd(_prefix_mean_backward_op_backward,
                                           setup_context=lambda ctx, inputs, output: None)


class _EagerPrefixMean(torch.autograd.Function):
    """Eager autograd of the prefix mean; the backward is its adjoint, itself differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _prefix_mean(x)

    @staticmethod
    def backward(ctx, grad_m: torch.Tensor, grad_total: torch.Tensor):
        return _EagerPrefixMeanGrad.apply(grad_m, grad_total)


class _EagerPrefixMeanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad_m: torch.Tensor, grad_total: torch.Tensor) -> torch.Tensor:
        return _prefix_mean_grad(grad_m, grad_total)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _EagerPrefixMean.apply(grad)


def prefix_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal mean over dim 1 and the total: (m, total) with m[:, t] = (x[:, 0] + ... + x[:, t])
    / (t + 1) in x's dtype, summed in float32 (float64 for float64 x), and total = the sum of
    all rows ([B, ...], that float dtype). On CUDA one Triton pass each way (forward and
    backward); under torch.compile the custom op ``apt_model::prefix_mean``.

    x: [B, T, ...] floating tensor (any device).
    """
    _check(x, "x")
    if torch.compiler.is_compiling():
        return _prefix_mean_op(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _EagerPrefixMean.apply(x)
    return _prefix_mean(x)
