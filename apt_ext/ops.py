"""The Python face of the native ops ``torch.ops.apt.*`` (schemas: csrc/ops.cpp).

This module registers, for every op: a fake (meta) kernel so that ``torch.compile`` and
``torch.library.opcheck`` work; autograd where the op is differentiable; and the Triton
kernels as the CUDA implementation where the CUDA build is absent (or ``APT_FORCE_TRITON=1``).
Dispatch order (SPEC 1): CUDA kernel -> Triton kernel -> C++ CPU kernel -> error.
"""
from __future__ import annotations

import importlib.util
import math
import os

import torch

from apt_ext import _native
from apt_ext.fp4 import checks as fp4_checks

_native.require()

# Ops that have a Triton implementation (filled in by _register_triton).
TRITON_OPS: list[str] = []


# --------------------------------------------------------------------------------------
# FP4
# --------------------------------------------------------------------------------------
def fp4_pack(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., K] (K even, 0..15) -> uint8 [..., K/2], low nibble first."""
    return torch.ops.apt.fp4_pack(codes)


def fp4_unpack(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] -> uint8 codes [..., K]."""
    return torch.ops.apt.fp4_unpack(packed)


def fp4_quantize(w: torch.Tensor, fmt: str = "nvfp4", block_size: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] -> (packed uint8 [N, Kp/2], scales [N, Kp/block], tensor_scale float32 [])."""
    return torch.ops.apt.fp4_quantize(w, fmt, fp4_checks.default_block(fmt, block_size))


def fp4_dequantize(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str,
                   block_size: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> [N, Kp] of ``dtype`` (the padded K)."""
    return torch.ops.apt.fp4_dequantize(packed, scales, tensor_scale, fmt,
                                        fp4_checks.default_block(fmt, block_size), dtype)


def fp4_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
               bias: torch.Tensor | None = None, fmt: str = "nvfp4", block_size: int | None = None
               ) -> torch.Tensor:
    """x [..., K] -> x @ W.T + bias [..., N] in x's dtype, fp32 accumulation."""
    return torch.ops.apt.fp4_linear(x, packed, scales, tensor_scale, bias, fmt,
                                    fp4_checks.default_block(fmt, block_size))


def fp4_linear_gelu(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                    bias: torch.Tensor | None = None, fmt: str = "nvfp4", block_size: int | None = None
                    ) -> torch.Tensor:
    """gelu(x @ W.T + bias) with the exact (erf) GELU, [..., N] in x's dtype. On CUDA the GELU
    is fused into fp4_linear's epilogue; elsewhere it is fp4_linear followed by F.gelu."""
    return torch.ops.apt.fp4_linear_gelu(x, packed, scales, tensor_scale, bias, fmt,
                                         fp4_checks.default_block(fmt, block_size))


@torch.library.register_fake("apt::fp4_pack")
def _fp4_pack_fake(codes):
    fp4_checks.check_pack_input(codes)
    return codes.new_empty((*codes.shape[:-1], codes.shape[-1] // 2))


@torch.library.register_fake("apt::fp4_unpack")
def _fp4_unpack_fake(packed):
    fp4_checks.check_unpack_input(packed)
    return packed.new_empty((*packed.shape[:-1], packed.shape[-1] * 2))


@torch.library.register_fake("apt::fp4_quantize")
def _fp4_quantize_fake(w, fmt, block_size):
    fp4_checks.check_quantize_args(w, fmt, block_size, check_values=False)
    n, k = w.shape
    kp = -(-k // block_size) * block_size
    packed = w.new_empty((n, kp // 2), dtype=torch.uint8)
    scales = w.new_empty((n, kp // block_size), dtype=fp4_checks.SCALE_DTYPES[fmt])
    return packed, scales, w.new_empty((), dtype=torch.float32)


@torch.library.register_fake("apt::fp4_dequantize")
def _fp4_dequantize_fake(packed, scales, tensor_scale, fmt, block_size, dtype):
    kp = fp4_checks.check_packed_weight(packed, scales, tensor_scale, fmt, block_size)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"dtype: expected float32, bfloat16 or float16, got {dtype}")
    return packed.new_empty((packed.shape[0], kp), dtype=dtype)


@torch.library.register_fake("apt::fp4_linear")
def _fp4_linear_fake(x, packed, scales, tensor_scale, bias, fmt, block_size):
    kp = fp4_checks.check_packed_weight(packed, scales, tensor_scale, fmt, block_size)
    fp4_checks.check_linear_args(x, packed, bias, kp, block_size)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


@torch.library.register_fake("apt::fp4_linear_gelu")
def _fp4_linear_gelu_fake(x, packed, scales, tensor_scale, bias, fmt, block_size):
    return _fp4_linear_fake(x, packed, scales, tensor_scale, bias, fmt, block_size)


@torch.library.register_kernel("apt::fp4_linear_gelu", "cpu")
def _fp4_linear_gelu_cpu(x, packed, scales, tensor_scale, bias, fmt, block_size):
    y = torch.ops.apt.fp4_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    return torch.nn.functional.gelu(y)


def _fp4_linear_setup_context(ctx, inputs, output):
    _, packed, scales, tensor_scale, _, fmt, block_size = inputs
    ctx.save_for_backward(packed, scales, tensor_scale)
    ctx.fmt, ctx.block_size, ctx.k = fmt, block_size, inputs[0].shape[-1]
    ctx.x_dtype = inputs[0].dtype
    ctx.bias_dtype = inputs[4].dtype if inputs[4] is not None else None


def _fp4_linear_backward(ctx, grad_out):
    """d/dx only (the 4-bit weight is frozen; QLoRA-style adapters train beside it) and d/dbias."""
    return _fp4_linear_grads(ctx, grad_out, *ctx.saved_tensors)


def _fp4_linear_grads(ctx, grad_out, packed, scales, tensor_scale):
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = torch.ops.apt.fp4_dequantize(packed, scales, tensor_scale, ctx.fmt, ctx.block_size,
                                         grad_out.dtype)[:, : ctx.k]
        grad_x = (grad_out @ w).to(ctx.x_dtype)
    if ctx.needs_input_grad[4]:
        grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).float().sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, grad_bias, None, None


torch.library.register_autograd("apt::fp4_linear", _fp4_linear_backward,
                                setup_context=_fp4_linear_setup_context)


def _fp4_linear_gelu_setup_context(ctx, inputs, output):
    _fp4_linear_setup_context(ctx, inputs, output)
    ctx.save_for_backward(inputs[0], *inputs[1:4], inputs[4])


def _fp4_linear_gelu_backward(ctx, grad_out):
    """Recomputes the pre-activation h = fp4_linear(x) and chains gelu'(h) into fp4_linear's backward."""
    x, packed, scales, tensor_scale, bias = ctx.saved_tensors
    h = torch.ops.apt.fp4_linear(x, packed, scales, tensor_scale, bias, ctx.fmt, ctx.block_size).float()
    cdf = 0.5 * (1.0 + torch.erf(h * 0.7071067811865476))
    pdf = torch.exp(-0.5 * h * h) * 0.3989422804014327
    grad_h = (grad_out.float() * (cdf + h * pdf)).to(grad_out.dtype)
    return _fp4_linear_grads(ctx, grad_h, packed, scales, tensor_scale)


torch.library.register_autograd("apt::fp4_linear_gelu", _fp4_linear_gelu_backward,
                                setup_context=_fp4_linear_gelu_setup_context)


# --------------------------------------------------------------------------------------
# Triton fallbacks for CUDA
# --------------------------------------------------------------------------------------
def _register_triton() -> None:
    """Register the Triton kernels as the CUDA implementation where the CUDA build lacks one
    (or everywhere under APT_FORCE_TRITON=1)."""
    if importlib.util.find_spec("triton") is None:
        return
    from apt_ext.triton import registry

    force = os.environ.get("APT_FORCE_TRITON") == "1"
    for op, fn in registry.kernels().items():
        TRITON_OPS.append(op)
        if force or not _native.has_kernel(op, "CUDA"):
            torch.library.register_kernel(f"apt::{op}", "cuda", fn)


_register_triton()


# --------------------------------------------------------------------------------------
# Left-spin residual (SPEC section 4)
# --------------------------------------------------------------------------------------
LEFT_SPIN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_left_spin_inputs(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None,
                           phi_prev: torch.Tensor | None, alpha: float, tau: float, beta: float,
                           w1: float, w2: float, eps: float) -> None:
    """The argument checks of the native kernels (csrc/left_spin/left_spin_checks.h), for the
    fake and Triton kernels. float64 is accepted on the CPU only (for gradcheck)."""
    allowed = LEFT_SPIN_DTYPES + ((torch.float64,) if u.device.type == "cpu" else ())
    if u.dtype not in allowed:
        raise TypeError(f"u: expected float32, bfloat16 or float16 (float64 on the CPU), got {u.dtype}")
    if u.dim() < 1:
        raise ValueError("u: expected a tensor [..., D] with at least 1 dimension")
    if u.shape[-1] == 0:
        raise ValueError(f"u: the last dimension D must be > 0, got shape {tuple(u.shape)}")
    for name, t in (("du", du), ("du_prev", du_prev)):
        if t is None:
            continue
        if t.shape != u.shape:
            raise ValueError(f"{name}: expected the shape of u {tuple(u.shape)}, got {tuple(t.shape)}")
        if t.dtype != u.dtype:
            raise TypeError(f"{name}: expected the dtype of u ({u.dtype}), got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name}: expected the device of u ({u.device}), got {t.device}")
    if phi_prev is not None:
        if not phi_prev.dtype.is_floating_point:
            raise TypeError(f"phi_prev: expected a floating-point tensor (float32), got {phi_prev.dtype}")
        if phi_prev.shape != u.shape[:-1]:
            raise ValueError(f"phi_prev: expected shape u.shape[:-1] = {tuple(u.shape[:-1])}, "
                             f"got {tuple(phi_prev.shape)}")
        if phi_prev.device != u.device:
            raise ValueError(f"phi_prev: expected the device of u ({u.device}), got {phi_prev.device}")
    for name, v in (("alpha", alpha), ("tau", tau), ("beta", beta), ("w1", w1), ("w2", w2)):
        if not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite number, got {v}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: expected a finite number >= 0, got {eps}")


def left_spin_phi_dtype(u: torch.Tensor) -> torch.dtype:
    """phi is float32, float64 for float64 inputs (CPU)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def left_spin_residual(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None = None,
                       phi_prev: torch.Tensor | None = None, alpha: float = 0.5, tau: float = 0.3,
                       beta: float = 0.7, w1: float = 1.0, w2: float = 0.5, eps: float = 1e-6
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-spin smoothed residual (SPEC 4): returns (out, phi).

    u, du, du_prev: [..., D], one dtype (float32/bfloat16/float16; float64 on the CPU), one
    device. phi_prev: [...] (u.shape[:-1]), float32. out = u + g*du in u's dtype with the
    per-row gate g = 1/sqrt(1 + phi^2); phi: [...] float32. Differentiable w.r.t. u, du,
    du_prev and phi_prev. A NaN anywhere in a row makes that row's out and phi NaN; other
    rows are unaffected.
    """
    return torch.ops.apt.left_spin_residual(u, du, du_prev, phi_prev, float(alpha), float(tau),
                                            float(beta), float(w1), float(w2), float(eps))


@torch.library.register_fake("apt::left_spin_residual")
def _left_spin_residual_fake(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps):
    check_left_spin_inputs(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps)
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            u.new_empty(u.shape[:-1], dtype=left_spin_phi_dtype(u)))


def _left_spin_backward_outputs(u, du, du_prev, phi_prev):
    """Empty (grad_u, grad_du, grad_du_prev, grad_phi_prev) of the backward op's shapes."""
    grad_du_prev = (torch.empty_like(du_prev, memory_format=torch.contiguous_format)
                    if du_prev is not None else u.new_empty((0,)))
    grad_phi_prev = (torch.empty_like(phi_prev, memory_format=torch.contiguous_format)
                     if phi_prev is not None else u.new_empty((0,), dtype=left_spin_phi_dtype(u)))
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            torch.empty_like(du, memory_format=torch.contiguous_format), grad_du_prev, grad_phi_prev)


def check_left_spin_grads(u: torch.Tensor, grad_out: torch.Tensor, grad_phi: torch.Tensor) -> None:
    """The checks of grad_out [..., D] and grad_phi [...] of the backward op."""
    if grad_out.shape != u.shape:
        raise ValueError(f"grad_out: expected the shape of u {tuple(u.shape)}, got {tuple(grad_out.shape)}")
    if grad_phi.shape != u.shape[:-1]:
        raise ValueError(f"grad_phi: expected shape u.shape[:-1] = {tuple(u.shape[:-1])}, "
                         f"got {tuple(grad_phi.shape)}")
    if not (grad_out.dtype.is_floating_point and grad_phi.dtype.is_floating_point):
        raise TypeError(f"grad_out, grad_phi: expected floating-point tensors, got {grad_out.dtype} "
                        f"and {grad_phi.dtype}")
    if grad_out.device != u.device or grad_phi.device != u.device:
        raise ValueError(f"grad_out, grad_phi: expected the device of u ({u.device})")


@torch.library.register_fake("apt::left_spin_residual_backward")
def _left_spin_residual_backward_fake(grad_out, grad_phi, u, du, du_prev, phi_prev, alpha, tau, beta,
                                      w1, w2, eps):
    check_left_spin_inputs(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps)
    check_left_spin_grads(u, grad_out, grad_phi)
    return _left_spin_backward_outputs(u, du, du_prev, phi_prev)


def _left_spin_setup_context(ctx, inputs, output):
    u, du, du_prev, phi_prev = inputs[:4]
    ctx.save_for_backward(u, du, du_prev, phi_prev)
    ctx.params = inputs[4:]


def _left_spin_backward(ctx, grad_out, grad_phi):
    """One fused native backward for all four inputs (no double backward)."""
    u, du, du_prev, phi_prev = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    if grad_phi is None:
        grad_phi = u.new_zeros(u.shape[:-1], dtype=left_spin_phi_dtype(u))
    gu, gdu, gdp, gpp = torch.ops.apt.left_spin_residual_backward(
        grad_out, grad_phi, u, du, du_prev, phi_prev, *ctx.params)
    return (gu if ctx.needs_input_grad[0] else None, gdu if ctx.needs_input_grad[1] else None,
            gdp if du_prev is not None and ctx.needs_input_grad[2] else None,
            gpp if phi_prev is not None and ctx.needs_input_grad[3] else None,
            None, None, None, None, None, None)


torch.library.register_autograd("apt::left_spin_residual", _left_spin_backward,
                                setup_context=_left_spin_setup_context)


def _left_spin_double_backward(ctx, *grads):
    raise RuntimeError("apt::left_spin_residual: double backward (gradients of its gradients, "
                       "e.g. a gradient penalty) is not supported")


# Registered so that create_graph=True works for first-order gradients and a second-order
# use fails loudly instead of silently treating the backward as constant.
torch.library.register_autograd("apt::left_spin_residual_backward", _left_spin_double_backward,
                                setup_context=lambda ctx, inputs, output: None)
