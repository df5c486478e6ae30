"""RMSNorm and residual adds fused into the FP4 projections around them (a pre-norm decoder layer:
``x + o(attn(qkv(norm1(x))))``, ``x + down(swiglu(gate_up(norm2(x))))``).

``fold_rms_norm_`` moves an RMSNorm's weight into the columns of the projections that read the
norm (exact in float: ``W @ (g * n) == (W * g) @ n``), leaving a norm that only normalises. After
``apt_ext.quantize_``, ``rms_norm_linear`` / ``rms_norm_swiglu`` then run the norm inside
FP4Linear's kernel (the GEMV sums the squares of x itself) and ``linear_residual`` adds the residual
stream as the kernel stores its output: the separate norm and add kernels of a layer go. For any
other modules, or calls off the tiled path, each helper is the plain composite.

The norm after a residual add can take its sums of squares from the add:
``linear_residual(..., return_sumsq=True)`` returns them (in parts of 16 features, taken by the
kernel as it stores), and ``rms_norm_linear`` / ``rms_norm_swiglu`` take them as ``x_sumsq``: the
norm's kernel then adds a few hundred floats a row instead of summing x's squares.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from apt_ext.fp4.tiled import sumsq_parts
from apt_ext.nn.fp4_linear import FP4Linear, check_sumsq, swiglu


def _check_norm(norm: nn.Module) -> None:
    if not isinstance(norm, nn.Module):
        raise TypeError(f"norm: expected an nn.Module, got {type(norm).__name__}")
    eps = norm.eps if isinstance(norm, nn.RMSNorm) else None
    if eps is not None and not (math.isfinite(eps) and eps >= 0):  # the fused and composite paths alike
        raise ValueError(f"norm: expected an eps that is None or a finite float >= 0, got {eps!r}")


def fold_rms_norm_(norm: nn.RMSNorm, *linears: nn.Linear) -> nn.RMSNorm:
    """Fold ``norm``'s weight g [D] into every Linear that reads its output (``W[:, j] *= g[j]``,
    computed in float32 and rounded to W's dtype), then drop it (``norm.weight`` becomes None: the
    norm only normalises). The model computes the same function (up to that rounding). Call it on
    the float model, before ``apt_ext.quantize_``: the quantised weights then carry g, and
    ``rms_norm_linear`` / ``rms_norm_swiglu`` can fuse the norm into the FP4 kernel. A norm without
    a weight is left as it is. Returns ``norm``."""
    if not isinstance(norm, nn.RMSNorm):
        raise TypeError(f"norm: expected an nn.RMSNorm, got {type(norm).__name__}")
    if len(norm.normalized_shape) != 1:
        raise ValueError(f"norm: expected a norm over one dimension, got normalized_shape {norm.normalized_shape}")
    if not linears:
        raise ValueError("linears: expected at least one nn.Linear that reads norm's output")
    d = norm.normalized_shape[0]
    for i, lin in enumerate(linears):
        if isinstance(lin, FP4Linear):
            raise TypeError(f"linears[{i}]: is an FP4Linear; fold the norm into the float model's Linear layers "
                            f"before apt_ext.quantize_ (its 4-bit weights cannot take g exactly)")
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"linears[{i}]: expected an nn.Linear, got {type(lin).__name__}")
        if lin.in_features != d:
            raise ValueError(f"linears[{i}]: in_features {lin.in_features} does not match norm's size {d}")
        if any(lin is other for other in linears[:i]):
            raise ValueError(f"linears[{i}]: the same layer appears twice (it would be scaled twice)")
        if lin.weight.is_inference() and not torch.is_inference_mode_enabled():  # refused before any is scaled
            raise ValueError(f"linears[{i}]: its weight is an inference tensor (made under torch.inference_mode), "
                             f"which can be written in place only under torch.inference_mode()")
    if norm.weight is None:
        return norm
    with torch.no_grad():
        g = norm.weight.detach().float()
        for lin in linears:
            lin.weight.copy_((lin.weight.float() * g.to(lin.weight.device)).to(lin.weight.dtype))
    norm.register_parameter("weight", None)
    norm.elementwise_affine = False
    return norm


def _fusable(norm: nn.Module, linear: nn.Module) -> bool:
    """Whether ``linear`` can run ``norm`` inside its kernel: an FP4Linear after an RMSNorm over its
    in_features with no weight (folded by fold_rms_norm_, or made without one)."""
    return (isinstance(linear, FP4Linear) and isinstance(norm, nn.RMSNorm) and norm.weight is None
            and tuple(norm.normalized_shape) == (linear.in_features,))


def _eps(norm: nn.RMSNorm, x: torch.Tensor) -> float:
    """The epsilon nn.RMSNorm uses for x: its own, or torch.finfo(x.dtype).eps when it has none."""
    if norm.eps is not None:
        return float(norm.eps)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a floating-point torch.Tensor, got {got}")
    return float(torch.finfo(x.dtype).eps)


def _check_x_sumsq(x: torch.Tensor, x_sumsq: torch.Tensor | None) -> None:
    """x_sumsq: None or float32 [..., P] with x's leading dimensions and device (the composite
    paths ignore it, so it is checked here for every path)."""
    if x_sumsq is not None and not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    check_sumsq(x, x_sumsq, "x_sumsq")


def rms_norm_linear(norm: nn.Module, linear: nn.Module, x: torch.Tensor,
                    x_sumsq: torch.Tensor | None = None) -> torch.Tensor:
    """``linear(norm(x))`` [..., out_features]. An FP4Linear after a weightless RMSNorm (see
    ``fold_rms_norm_``) runs ``FP4Linear.fused(x, rms_eps=norm's eps, rms_sumsq=x_sumsq)``: one kernel
    on the tiled path, x normalised in float32 and not rounded in between. ``x_sumsq``: x's sums of
    squares in parts (``linear_residual(..., return_sumsq=True)``'s), or None (the kernel sums them)."""
    _check_norm(norm)
    _check_x_sumsq(x, x_sumsq)
    if _fusable(norm, linear):
        return linear.fused(x, rms_eps=_eps(norm, x), rms_sumsq=x_sumsq)
    if not isinstance(linear, nn.Module):
        raise TypeError(f"linear: expected an nn.Module, got {type(linear).__name__}")
    return linear(norm(x))


def rms_norm_swiglu(norm: nn.Module, gate_up: nn.Module, x: torch.Tensor,
                    x_sumsq: torch.Tensor | None = None) -> torch.Tensor:
    """``apt_ext.nn.swiglu(gate_up, norm(x))`` [..., out_features / 2]: silu(gate) * up of a fused
    [gate; up] projection. An FP4Linear after a weightless RMSNorm runs
    ``FP4Linear.swiglu(x, rms_eps=norm's eps, rms_sumsq=x_sumsq)``: norm, product and SwiGLU in one
    kernel on the tiled path. ``x_sumsq``: as ``rms_norm_linear``'s."""
    _check_norm(norm)
    _check_x_sumsq(x, x_sumsq)
    if _fusable(norm, gate_up):
        return gate_up.swiglu(x, rms_eps=_eps(norm, x), rms_sumsq=x_sumsq)
    return swiglu(gate_up, norm(x))


def linear_residual(linear: nn.Module, x: torch.Tensor, residual: torch.Tensor,
                    return_sumsq: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``residual + linear(x)`` [..., out_features] (residual: that shape, x's dtype). An FP4Linear
    runs ``FP4Linear.fused(x, residual=residual)``: the kernel adds the residual as it stores.
    ``return_sumsq``: returns (y, its sums of squares in parts: float32 [..., ceil(out_features /
    16)]) for the next norm's ``x_sumsq`` (the kernel takes them as it stores y; other modules
    by ``apt_ext.fp4.tiled.sumsq_parts``)."""
    if not isinstance(return_sumsq, bool):
        raise TypeError(f"return_sumsq: expected a bool, got {type(return_sumsq).__name__}")
    if isinstance(linear, FP4Linear):
        return linear.fused(x, residual=residual, return_sumsq=return_sumsq)
    if not isinstance(linear, nn.Module):
        raise TypeError(f"linear: expected an nn.Module, got {type(linear).__name__}")
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"residual: expected a Tensor, got {type(residual).__name__}")
    y = linear(x)
    if isinstance(y, torch.Tensor) and (residual.shape != y.shape or residual.dtype != y.dtype):  # no broadcast
        raise ValueError(f"residual: expected {tuple(y.shape)} of linear(x)'s dtype {y.dtype}, got "
                         f"{tuple(residual.shape)} {residual.dtype}")
    y = residual + y
    return (y, sumsq_parts(y)) if return_sumsq else y
