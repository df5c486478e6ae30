"""The Python face of the FP4 ops ``torch.ops.apt.fp4_*`` (schemas: csrc/ops.cpp).

Wrappers whose ``block_size`` defaults to the format's, fake (meta) kernels for
``torch.compile`` and ``torch.library.opcheck``, autograd of ``fp4_linear`` and
``fp4_linear_gelu``, and the CPU composite of ``fp4_linear_gelu``. The argument checks are the
C++ ones (csrc/fp4/fp4_checks.cpp, csrc/fp4/fp4_cpu_tile.cpp): the fake kernels call them through ``apt_ext._C.fp4``.
``apt_ext`` calls :func:`register` once the native extension is loaded; without it the wrappers
still import and their first call raises the extension's load error.
"""
from __future__ import annotations

import torch

from apt_ext import _native
from apt_ext._kernels import concrete_shapes, register_kernel
from apt_ext.fp4 import tiled
from apt_ext.fp4.format import block_size_for, get_format



def fp4_pack(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [..., K] (K even, 0..15) -> uint8 [..., K/2], low nibble first."""
    return torch.ops.apt.fp4_pack(codes)


def fp4_unpack(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K/2] -> uint8 codes [..., K]."""
    return torch.ops.apt.fp4_unpack(packed)


def fp4_quantize(w: torch.Tensor, fmt: str = "nvfp4", block_size: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [N, K] -> (packed uint8 [N, Kp/2], scales [N, Kp/block], tensor_scale float32 [])."""
    return torch.ops.apt.fp4_quantize(w, fmt, block_size_for(fmt, block_size))


def fp4_dequantize(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor, fmt: str,
                   block_size: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> [N, Kp] of ``dtype`` (the padded K)."""
    return torch.ops.apt.fp4_dequantize(packed, scales, tensor_scale, fmt, block_size_for(fmt, block_size), dtype)


def fp4_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
               bias: torch.Tensor | None = None, fmt: str = "nvfp4", block_size: int | None = None
               ) -> torch.Tensor:
    """x [..., K] -> x @ W.T + bias [..., N] in x's dtype, fp32 accumulation."""
    return torch.ops.apt.fp4_linear(x, packed, scales, tensor_scale, bias, fmt, block_size_for(fmt, block_size))


def fp4_linear_gelu(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                    bias: torch.Tensor | None = None, fmt: str = "nvfp4", block_size: int | None = None
                    ) -> torch.Tensor:
    """gelu(x @ W.T + bias) with the exact (erf) GELU, [..., N] in x's dtype. On CUDA the GELU
    is fused into fp4_linear's epilogue; elsewhere it is fp4_linear followed by F.gelu."""
    return torch.ops.apt.fp4_linear_gelu(x, packed, scales, tensor_scale, bias, fmt,
                                         block_size_for(fmt, block_size))


# ---- fake kernels: output shapes; the C++ checks run when the shapes are concrete ----------
def _fp4_pack_fake(codes):
    if concrete_shapes(codes):
        _native._C.fp4.check_pack(codes)
    return codes.new_empty((*codes.shape[:-1], codes.shape[-1] // 2))


def _fp4_unpack_fake(packed):
    if concrete_shapes(packed):
        _native._C.fp4.check_unpack(packed)
    return packed.new_empty((*packed.shape[:-1], packed.shape[-1] * 2))


def _fp4_quantize_fake(w, fmt, block_size):
    if concrete_shapes(w):
        _native._C.fp4.check_quantize(w, fmt, block_size)
    n, k = w.shape
    kp = -(-k // block_size) * block_size
    packed = w.new_empty((n, kp // 2), dtype=torch.uint8)
    scales = w.new_empty((n, kp // block_size), dtype=get_format(fmt).scale_dtype)
    return packed, scales, w.new_empty((), dtype=torch.float32)


def _fp4_dequantize_fake(packed, scales, tensor_scale, fmt, block_size, dtype):
    if concrete_shapes(packed, scales, tensor_scale):
        _native._C.fp4.check_dequantize(packed, scales, tensor_scale, fmt, block_size, dtype)
    return packed.new_empty((packed.shape[0], packed.shape[1] * 2), dtype=dtype)


def _fp4_linear_fake(x, packed, scales, tensor_scale, bias, fmt, block_size):
    if concrete_shapes(x, packed, scales, tensor_scale, bias):
        _native._C.fp4.check_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


def _fp4_linear_gelu_fake(x, packed, scales, tensor_scale, bias, fmt, block_size):
    return _fp4_linear_fake(x, packed, scales, tensor_scale, bias, fmt, block_size)


def _fp4_tile_fake(packed, scales, tensor_scale, fmt, block_size):
    dtype, entries, per_entry = tiled.STEP_SCALES[fmt]
    nt, steps = -(-packed.shape[0] // tiled.TILE_ROWS), -(-2 * packed.shape[1] // tiled.STEP_COLS)
    return (packed.new_empty((nt, steps, tiled.STEP_BYTES)),
            packed.new_empty((nt, steps, entries, per_entry), dtype=dtype),
            packed.new_empty((), dtype=torch.float32))


def _fp4_untile_fake(tiles, tile_scales, out_scale, fmt, n, k):
    return tiles.new_empty((n, k), dtype=torch.float32)


def _fp4_untile_packed_fake(tiles, tile_scales, out_scale, fmt, n, k):
    f = get_format(fmt)
    kp = -(-k // f.block_size) * f.block_size
    return (tiles.new_empty((n, kp // 2)), tiles.new_empty((n, kp // f.block_size), dtype=f.scale_dtype),
            out_scale.new_empty(()))


def _fp4_linear_tiled_fake(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, rms_eps=None, residual=None,
                           rms_sumsq=None):
    return x.new_empty((*x.shape[:-1], n))


def _fp4_linear_tiled_sumsq_fake(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, rms_eps=None,
                                 residual=None, rms_sumsq=None):
    return (x.new_empty((*x.shape[:-1], n)),
            x.new_empty((*x.shape[:-1], -(-n // tiled.SUMSQ_GROUP)), dtype=torch.float32))


def _fp4_linear_tiled_swiglu_fake(x, tiles, tile_scales, out_scale, bias, fmt, n, k, rms_eps=None, rms_sumsq=None):
    return x.new_empty((*x.shape[:-1], n // 2))


def _fp4_cpu_tile_fake(packed, scales, tensor_scale, fmt, block_size):
    kp = _native._C.fp4.check_cpu_tile(packed, scales, tensor_scale, fmt, block_size)
    nt = -(-packed.shape[0] // tiled.TILE_ROWS)
    scale_dtype = torch.float32 if fmt == "nf4" else torch.uint8
    return (packed.new_empty((nt, kp // 8, 4 * tiled.TILE_ROWS)),
            packed.new_empty((nt, kp // block_size, tiled.TILE_ROWS), dtype=scale_dtype),
            packed.new_empty((), dtype=torch.float32))


def _fp4_linear_cpu_tiled_fake(x, tiles, tile_scales, out_scale, bias, fmt, n, k):
    _native._C.fp4.check_linear_cpu_tiled(x, tiles, tile_scales, out_scale, bias, fmt, n, k)
    return x.new_empty((*x.shape[:-1], n))


def _fp4_linear_gelu_cpu(x, packed, scales, tensor_scale, bias, fmt, block_size):
    """The CPU kernel of apt::fp4_linear_gelu: a composite, not a fused kernel."""
    y = torch.ops.apt.fp4_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    return torch.nn.functional.gelu(y)


# ---- autograd: d/dx and d/dbias (the 4-bit weight is frozen; QLoRA-style adapters train beside it)
def _fp4_linear_setup_context(ctx, inputs, output):
    _, packed, scales, tensor_scale, _, fmt, block_size = inputs
    ctx.save_for_backward(packed, scales, tensor_scale)
    ctx.fmt, ctx.block_size, ctx.k = fmt, block_size, inputs[0].shape[-1]
    ctx.x_dtype = inputs[0].dtype
    ctx.bias_dtype = inputs[4].dtype if inputs[4] is not None else None


def _fp4_linear_backward(ctx, grad_out):
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


def register() -> None:
    """Fake kernels, autograd and the CPU composite of the FP4 ops (once, with _C loaded)."""
    fakes = {"fp4_pack": _fp4_pack_fake, "fp4_unpack": _fp4_unpack_fake, "fp4_quantize": _fp4_quantize_fake,
             "fp4_dequantize": _fp4_dequantize_fake, "fp4_linear": _fp4_linear_fake,
             "fp4_linear_gelu": _fp4_linear_gelu_fake, "fp4_tile": _fp4_tile_fake,
             "fp4_untile": _fp4_untile_fake, "fp4_untile_packed": _fp4_untile_packed_fake,
             "fp4_linear_tiled": _fp4_linear_tiled_fake, "fp4_linear_tiled_swiglu": _fp4_linear_tiled_swiglu_fake,
             "fp4_linear_tiled_sumsq": _fp4_linear_tiled_sumsq_fake,
             "fp4_cpu_tile": _fp4_cpu_tile_fake, "fp4_linear_cpu_tiled": _fp4_linear_cpu_tiled_fake}
    for op, fake in fakes.items():
        torch.library.register_fake(f"apt::{op}", fake)
    register_kernel("fp4_linear_gelu", "cpu", "Python composite: apt::fp4_linear, then F.gelu",
                    _fp4_linear_gelu_cpu)
    torch.library.register_autograd("apt::fp4_linear", _fp4_linear_backward,
                                    setup_context=_fp4_linear_setup_context)
    torch.library.register_autograd("apt::fp4_linear_gelu", _fp4_linear_gelu_backward,
                                    setup_context=_fp4_linear_gelu_setup_context)
