"""Running sum over the sequence dimension as an opaque op for torch.compile.

``torch.cumsum(x, dim=1)`` on a [B, T, D] activation is a scan over a non-innermost dimension;
on CUDA, torch 2.11's inductor turns a long one into a split scan whose code generation fails
(``InductorError: TypeError: list indices must be integers or slices, not NoneType`` in
``TritonSymbols.get_block_shape``; measured on an H200 at B 8, T 1024, D 768, see
docs/model.md). As a custom op the sum stays one ATen ``cumsum`` call inside the compiled graph
(no graph break, no inductor scan), and eager mode is unchanged.
"""
from __future__ import annotations

import torch


@torch.library.custom_op("apt_model::prefix_sum", mutates_args=())
def prefix_sum(x: torch.Tensor) -> torch.Tensor:
    """Inclusive running sum over dim 1: out[:, t] = x[:, 0] + ... + x[:, t].

    x: [B, T, ...] floating tensor (any device). Returns a tensor of x's shape and dtype.
    """
    if x.dim() < 2:
        raise ValueError(f"x: expected a tensor of at least 2 dims [B, T, ...], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating tensor, got {x.dtype}")
    return torch.cumsum(x, dim=1)


@prefix_sum.register_fake
def _prefix_sum_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _prefix_sum_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    # d out[:, t] / d x[:, s] = 1 for s <= t: the gradient of x[:, s] sums grad over t >= s.
    return prefix_sum(grad.flip(1)).flip(1)


prefix_sum.register_autograd(_prefix_sum_backward)
