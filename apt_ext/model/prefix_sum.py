"""Running sum over the sequence dimension that torch.compile keeps as one ATen call.

``torch.cumsum(x, dim=1)`` on a [B, T, D] activation is a scan over a non-innermost dimension;
on CUDA, torch 2.11's inductor turns a long one into a split scan whose code generation fails
(``InductorError: TypeError: list indices must be integers or slices, not NoneType`` in
``TritonSymbols.get_block_shape``; measured on an H200 at B 8, T 1024, D 768, see
docs/model.md). Under torch.compile the sum therefore goes through the custom op
``apt_model::prefix_sum``, which the compiled graph calls as one ATen ``cumsum`` (no graph
break, no inductor scan). In eager mode it is a plain ``torch.cumsum``: a custom op's first
eager call imports torch._dynamo (about 2 s), which a server's first request must not pay.
"""
from __future__ import annotations

import torch


@torch.library.custom_op("apt_model::prefix_sum", mutates_args=())
def _prefix_sum_op(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, dim=1)


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
    return torch.cumsum(x, dim=1)
