"""Argument checks of the FP4 ops on the Python side (fake kernels, Triton path).

They mirror csrc/fp4/fp4_format.h so every backend rejects bad input with the same message.
"""
from __future__ import annotations

import torch

from apt_ext.reference.fp4 import BLOCK_SIZES, SCALE_DTYPES, check_weight

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FORMATS = tuple(BLOCK_SIZES)


def check_fmt(fmt: str) -> None:
    if fmt not in BLOCK_SIZES:
        raise ValueError(f"fmt: unknown FP4 format {fmt!r}; expected one of 'nvfp4', 'mxfp4', 'nf4'")


def default_block(fmt: str, block_size: int | None) -> int:
    """The format's block size when ``block_size`` is None (the ops then check it)."""
    check_fmt(fmt)
    return BLOCK_SIZES[fmt] if block_size is None else int(block_size)


def check_block_size(fmt: str, block_size: int) -> None:
    check_fmt(fmt)
    if block_size != BLOCK_SIZES[fmt]:
        raise ValueError(f"block_size: format {fmt!r} uses blocks of {BLOCK_SIZES[fmt]} elements, got {block_size}")


def check_quantize_args(w: torch.Tensor, fmt: str, block_size: int, check_values: bool = True) -> None:
    """fp4_quantize's checks; ``check_values`` also rejects NaN/Inf (needs real data)."""
    if check_values:
        check_weight(w, fmt, block_size)
        return
    check_block_size(fmt, block_size)
    if w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"w: expected float32, bfloat16 or float16, got {w.dtype}")
    if w.dim() != 2:
        raise ValueError(f"w: expected a 2-D weight [N, K], got {w.dim()}-D")
    if w.numel() == 0:
        raise ValueError(f"w: expected a non-empty weight, got shape {tuple(w.shape)}")


def check_pack_input(codes: torch.Tensor) -> None:
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes: expected uint8, got {codes.dtype}")
    if codes.dim() < 1 or codes.shape[-1] % 2:
        raise ValueError(f"codes: expected [..., K] with an even K, got shape {tuple(codes.shape)}")


def check_unpack_input(packed: torch.Tensor) -> None:
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected uint8, got {packed.dtype}")
    if packed.dim() < 1:
        raise ValueError("packed: expected at least 1 dimension [..., K/2]")


def check_packed_weight(packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                        fmt: str, block_size: int) -> int:
    """Checks a packed weight's three tensors; returns K_padded."""
    check_block_size(fmt, block_size)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected uint8, got {packed.dtype}")
    if packed.dim() != 2:
        raise ValueError(f"packed: expected a 2-D tensor [N, K_padded/2], got {packed.dim()}-D")
    kp = packed.shape[1] * 2
    if kp <= 0 or kp % block_size:
        raise ValueError(f"packed: K_padded = 2*packed.size(1) = {kp} must be a positive multiple of block_size {block_size}")
    if scales.dtype != SCALE_DTYPES[fmt]:
        raise TypeError(f"scales: expected {SCALE_DTYPES[fmt]} for this format, got {scales.dtype}")
    if tuple(scales.shape) != (packed.shape[0], kp // block_size):
        raise ValueError(f"scales: expected shape [{packed.shape[0]}, {kp // block_size}], got {list(scales.shape)}")
    if tensor_scale.dtype != torch.float32:
        raise TypeError(f"tensor_scale: expected float32, got {tensor_scale.dtype}")
    if tensor_scale.numel() != 1:
        raise ValueError(f"tensor_scale: expected one element, got {tensor_scale.numel()}")
    if scales.device != packed.device or tensor_scale.device != packed.device:
        raise ValueError(f"scales and tensor_scale must be on packed's device {packed.device}, "
                         f"got {scales.device} and {tensor_scale.device}")
    return kp


def check_linear_args(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, kp: int,
                      block_size: int) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x: expected float32, bfloat16 or float16, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError("x: expected at least 1 dimension [..., K]")
    k = x.shape[-1]
    if not (0 < k <= kp and kp - k < block_size):
        raise ValueError(f"x: last dimension K = {k} does not match the weight (K_padded = {kp}, block_size {block_size})")
    if x.device != packed.device:
        raise ValueError(f"x: expected device {packed.device}, got {x.device}")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != packed.shape[0]:
            raise ValueError(f"bias: expected shape [{packed.shape[0]}], got {list(bias.shape)}")
        if bias.dtype not in FLOAT_DTYPES:
            raise TypeError(f"bias: expected float32, bfloat16 or float16, got {bias.dtype}")
        if bias.device != packed.device:
            raise ValueError(f"bias: expected device {packed.device}, got {bias.device}")
