"""The Python face of the native ops ``torch.ops.apt.*`` (schemas: csrc/ops.cpp).

This module registers, for every op: a fake (meta) kernel so that ``torch.compile`` and
``torch.library.opcheck`` work; autograd where the op is differentiable; and the Triton
kernels as the CUDA implementation where the CUDA build is absent (or ``APT_FORCE_TRITON=1``).
Dispatch order (SPEC 1): CUDA kernel -> Triton kernel -> C++ CPU kernel -> error.
"""
from __future__ import annotations

import importlib.util
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
