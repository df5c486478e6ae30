"""Triton ``apt::fp4_linear`` and ``apt::fp4_linear_gelu``: x [..., K] @ dequantize(W).T + bias.

Checks the arguments (the native checks, the same messages as the CUDA and CPU kernels),
flattens x to [M, K] and runs one of two kernel families by M:
  * M <= GEMV_MAX_M (16): apt_ext/triton/fp4_gemv.py, split-K GEMV streaming the packed weight;
  * larger M: apt_ext/triton/fp4_gemm.py, tiled ``tl.dot`` GEMM decoding weight tiles in registers.
Both autotune per (format, x dtype, M bucket, N, K) on a GPU (apt_ext/triton/autotune.py) and
use one config under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import torch

from apt_ext import _native
from apt_ext.triton import kernel
from apt_ext.triton.fp4_decode import scales_as_raw
from apt_ext.triton.fp4_gemm import gemm
from apt_ext.triton.fp4_gemv import GEMV_MAX_M, gemv


def linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
           bias: torch.Tensor | None, fmt: str, block_size: int, gelu: bool = False) -> torch.Tensor:
    """x [..., K] float32/bfloat16/float16, packed uint8 [N, Kp/2], scales [N, Kp/block_size],
    tensor_scale float32 [] or [1], bias [N] or None -> [..., N] in x's dtype (float32
    accumulation); ``gelu`` applies the exact (erf) GELU after the bias."""
    _native._C.fp4.check_linear(x, packed, scales, tensor_scale, bias, fmt, block_size)
    k, n = x.shape[-1], packed.shape[0]
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    if m == 0 or n == 0:
        return x.new_empty((*x.shape[:-1], n))
    args = (packed.contiguous(), scales_as_raw(scales.contiguous(), fmt), tensor_scale.reshape(()).to(torch.float32),
            bias.contiguous() if bias is not None else None, fmt, block_size, gelu)
    y = gemv(x2, *args) if m <= GEMV_MAX_M else gemm(x2, *args)
    return y.reshape(*x.shape[:-1], n)


@kernel("fp4_linear")
def fp4_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
               bias: torch.Tensor | None, fmt: str, block_size: int) -> torch.Tensor:
    """The ``apt::fp4_linear`` schema's Triton kernel."""
    return linear(x, packed, scales, tensor_scale, bias, fmt, block_size)


@kernel("fp4_linear_gelu")
def fp4_linear_gelu(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, tensor_scale: torch.Tensor,
                    bias: torch.Tensor | None, fmt: str, block_size: int) -> torch.Tensor:
    """The ``apt::fp4_linear_gelu`` schema's Triton kernel (GELU in the epilogue)."""
    return linear(x, packed, scales, tensor_scale, bias, fmt, block_size, gelu=True)
