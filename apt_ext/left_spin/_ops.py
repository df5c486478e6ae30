"""The Python face of ``torch.ops.apt.left_spin_residual`` and its backward (schemas:
csrc/ops.cpp): the wrapper with docs/contract.md §4's defaults, fake (meta) kernels and autograd.

The argument checks are the C++ ones (csrc/left_spin/left_spin_checks.cpp): the fake kernels
call them through ``apt_ext._C.left_spin``. ``apt_ext`` calls :func:`register` once the native
extension is loaded; without it the wrapper still imports and its first call raises the
extension's load error.
"""
from __future__ import annotations

import torch

from apt_ext import _native
from apt_ext._kernels import concrete_shapes
from apt_ext.left_spin.params import DEFAULTS, LeftSpinParams


def left_spin_residual(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None = None,
                       phi_prev: torch.Tensor | None = None, alpha: float = DEFAULTS.alpha,
                       tau: float = DEFAULTS.tau, beta: float = DEFAULTS.beta, w1: float = DEFAULTS.w1,
                       w2: float = DEFAULTS.w2, eps: float = DEFAULTS.eps,
                       params: LeftSpinParams | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-spin smoothed residual (docs/contract.md §4): returns (out, phi).

    u, du, du_prev: [..., D], one device. u is float32/bfloat16/float16 (float64 on the CPU);
    du and du_prev share one dtype: u's, or bfloat16/float16 beside a float32 u (a branch
    output under autocast beside a float32 residual stream; no cast kernel needed).
    phi_prev: [...] (u.shape[:-1]), float32. out = u + g*du in u's dtype with the
    per-row gate g = 1/sqrt(1 + phi^2); phi: [...] float32. ``params`` (a LeftSpinParams)
    replaces the six scalars when given. Differentiable w.r.t. u, du, du_prev and phi_prev
    (each gradient in its input's dtype). A NaN anywhere in a row makes that row's out and phi
    NaN; other rows are unaffected.
    """
    p = params.as_tuple() if params is not None else tuple(map(float, (alpha, tau, beta, w1, w2, eps)))
    return torch.ops.apt.left_spin_residual(u, du, du_prev, phi_prev, *p)


def phi_dtype(u: torch.Tensor) -> torch.dtype:
    """phi is float32, float64 for float64 inputs (CPU)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def check_arguments(u, du, du_prev, phi_prev, params) -> None:
    """The native kernels' checks (float64 is accepted on the CPU only), when shapes are concrete."""
    if concrete_shapes(u, du, du_prev, phi_prev):
        _native._C.left_spin.check(u, du, du_prev, phi_prev, *params, allow_double=u.device.type == "cpu")


def _forward_fake(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps):
    check_arguments(u, du, du_prev, phi_prev, (alpha, tau, beta, w1, w2, eps))
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            u.new_empty(u.shape[:-1], dtype=phi_dtype(u)))


def _backward_fake(grad_out, grad_phi, u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps):
    check_arguments(u, du, du_prev, phi_prev, (alpha, tau, beta, w1, w2, eps))
    if concrete_shapes(u, grad_out, grad_phi):
        _native._C.left_spin.check_grads(u, grad_out, grad_phi)
    grad_du_prev = (torch.empty_like(du_prev, memory_format=torch.contiguous_format)
                    if du_prev is not None else u.new_empty((0,)))
    grad_phi_prev = (torch.empty_like(phi_prev, memory_format=torch.contiguous_format)
                     if phi_prev is not None else u.new_empty((0,), dtype=phi_dtype(u)))
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            torch.empty_like(du, memory_format=torch.contiguous_format), grad_du_prev, grad_phi_prev)


def _setup_context(ctx, inputs, output):
    u, du, du_prev, phi_prev = inputs[:4]
    ctx.save_for_backward(u, du, du_prev, phi_prev)
    ctx.params = inputs[4:]


def _backward(ctx, grad_out, grad_phi):
    """One fused native backward for all four inputs (no double backward)."""
    u, du, du_prev, phi_prev = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    if grad_phi is None:
        grad_phi = u.new_zeros(u.shape[:-1], dtype=phi_dtype(u))
    gu, gdu, gdp, gpp = torch.ops.apt.left_spin_residual_backward(
        grad_out, grad_phi, u, du, du_prev, phi_prev, *ctx.params)
    return (gu if ctx.needs_input_grad[0] else None, gdu if ctx.needs_input_grad[1] else None,
            gdp if du_prev is not None and ctx.needs_input_grad[2] else None,
            gpp if phi_prev is not None and ctx.needs_input_grad[3] else None,
            None, None, None, None, None, None)


def _double_backward(ctx, *grads):
    raise RuntimeError("apt::left_spin_residual: double backward (gradients of its gradients, "
                       "e.g. a gradient penalty) is not supported")


def register() -> None:
    """Fake kernels and autograd of the left-spin ops (once, with _C loaded)."""
    torch.library.register_fake("apt::left_spin_residual", _forward_fake)
    torch.library.register_fake("apt::left_spin_residual_backward", _backward_fake)
    torch.library.register_autograd("apt::left_spin_residual", _backward, setup_context=_setup_context)
    # Registered so that create_graph=True works for first-order gradients and a second-order
    # use fails loudly instead of silently treating the backward as constant.
    torch.library.register_autograd("apt::left_spin_residual_backward", _double_backward,
                                    setup_context=lambda ctx, inputs, output: None)
